"""PIRL projection heads (PIRL Sec. 4.1, "Implementation details").

Both heads read the global-average-pooled features of ONE shared backbone and end with L2
normalisation, so embeddings lie on the unit sphere.

- f (image head): Linear(d -> 128) on the features of v_I.
- g (jigsaw head): Linear(d -> 128) on each of the 9 patch features (shared weights), the 9
  outputs concatenated in the shuffled order (9 x 128 = 1152), then Linear(1152 -> 128).

`kind="mlp"` replaces each Linear(d -> 128) by VISSL's improved MLP (d -> 2048 -> ReLU -> 128).
"""

import keras

from mobile_pirl_tf.core.config import HEAD_KINDS

MLP_HIDDEN = 2048


def projection(embedding_dim, kind, name, dtype=None):
    """Linear(d -> embedding_dim), or the MLP d -> 2048 -> ReLU -> embedding_dim."""
    if kind == "linear":
        return keras.layers.Dense(embedding_dim, name=name, dtype=dtype)
    if kind == "mlp":
        return keras.Sequential([
            keras.layers.Dense(MLP_HIDDEN, activation="relu", name=f"{name}_hidden", dtype=dtype),
            keras.layers.Dense(embedding_dim, name=f"{name}_out", dtype=dtype),
        ], name=name)
    raise ValueError(f"head kind must be one of {HEAD_KINDS}, got {kind!r}")


@keras.saving.register_keras_serializable(package="mobile_pirl_tf")
class ImageHead(keras.layers.Layer):
    """f: [B, d] features -> [B, embedding_dim] unit vectors."""

    def __init__(self, embedding_dim=128, kind="linear", **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim, self.kind = embedding_dim, kind
        # Sub-layers take the head's dtype policy (float32 inside a mixed-precision model).
        self.project = projection(embedding_dim, kind, "f", self.dtype_policy)
        self.normalize = keras.layers.UnitNormalization(axis=-1, dtype=self.dtype_policy)

    def call(self, features):
        return self.normalize(self.project(features))

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim, "kind": self.kind}


@keras.saving.register_keras_serializable(package="mobile_pirl_tf")
class JigsawHead(keras.layers.Layer):
    """g: [B, P, d] per-patch features (in shuffled order) -> [B, embedding_dim] unit vectors."""

    def __init__(self, embedding_dim=128, kind="linear", **kwargs):
        super().__init__(**kwargs)
        self.embedding_dim, self.kind = embedding_dim, kind
        self.per_patch = projection(embedding_dim, kind, "g_patch", self.dtype_policy)
        self.fuse = keras.layers.Dense(embedding_dim, name="g_fuse", dtype=self.dtype_policy)
        self.normalize = keras.layers.UnitNormalization(axis=-1, dtype=self.dtype_policy)

    def call(self, patch_features):
        per_patch = self.per_patch(patch_features)                     # [B, P, 128]
        num_patches = patch_features.shape[1]
        concatenated = keras.ops.reshape(per_patch, (-1, num_patches * self.embedding_dim))
        return self.normalize(self.fuse(concatenated))

    def get_config(self):
        return {**super().get_config(), "embedding_dim": self.embedding_dim, "kind": self.kind}
