"""The PIRL memory bank and uniform negative sampling.

One row per training example, addressed by the stable example index that the input
pipeline carries. Rows start random on the unit sphere; after the loss has read the bank,
the rows of the batch are updated with the image-branch embedding (PIRL Eq. 3 context,
momentum 0.5 in the paper):

    m_i <- normalize(momentum * m_i + (1 - momentum) * f(v_I_i))

Under `tf.distribute` the bank is a mirrored, non-trainable variable with aggregation
ONLY_FIRST_REPLICA: every replica gathers the embeddings and indices of the whole global
batch and applies the same scatter update, so the copies never drift.

Negatives are drawn uniformly from the N rows, never the example's own row, in
O(batch x K): a draw r in [0, N - 1) is shifted to r + 1 when r >= own index.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="mobile_pirl_tf")
class UnitRows(keras.initializers.Initializer):
    """Gaussian rows scaled to unit L2 norm: uniform on the sphere."""

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, shape, dtype=None):
        rows = keras.random.normal(shape, dtype=dtype, seed=self.seed)
        return rows / keras.ops.norm(rows, axis=-1, keepdims=True)

    def get_config(self):
        return {"seed": self.seed}


class MemoryBank(keras.layers.Layer):
    """A [size, dim] bank of unit vectors with momentum updates."""

    def __init__(self, size, dim=128, momentum=0.5, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.size, self.dim, self.momentum = int(size), int(dim), float(momentum)
        self.rows = self.add_weight(
            shape=(self.size, self.dim), initializer=UnitRows(seed), trainable=False,
            aggregation="only_first_replica", name="rows")

    def read(self, index):
        """Rows at `index` (any int shape) -> [..., dim]."""
        return tf.gather(self.rows.value, index)

    def update(self, embeddings, index):
        """m_i <- normalize(momentum m_i + (1 - momentum) e_i) for the rows in `index` only.

        Call it with the embeddings and indices of the GLOBAL batch (all-gathered), so every
        replica writes the same rows.
        """
        old = self.read(index)
        new = tf.math.l2_normalize(self.momentum * old + (1.0 - self.momentum) * embeddings,
                                   axis=-1)
        return self.rows.value.scatter_update(tf.IndexedSlices(new, index))


def sample_negatives(index, num_negatives, size, seed, global_offset=0, global_batch=None,
                     shared=False):
    """Uniform negative row indices for the examples in `index` (int64 [B]).

    per example (the paper, NPID/VISSL): [B, K] independent draws excluding each own row.
    shared: one [K] set for the whole batch (cheaper: a [B, K] matmul instead of a
    [B, K, d] gather); the caller must mask each example's own row (`own_row_mask`).

    The draws for the whole GLOBAL batch are made from `seed` (a [2] int tensor) and this
    replica takes rows [global_offset, global_offset + B), so the negatives of an example do
    not depend on how the batch is split over replicas.
    """
    index = tf.cast(index, tf.int64)
    if shared:
        return tf.random.stateless_uniform([num_negatives], seed, minval=0, maxval=size,
                                           dtype=tf.int64)
    batch = tf.shape(index)[0]
    global_batch = batch if global_batch is None else global_batch
    draws = tf.random.stateless_uniform([global_batch, num_negatives], seed, minval=0,
                                        maxval=size - 1, dtype=tf.int64)
    draws = draws[global_offset:global_offset + batch]
    return draws + tf.cast(draws >= index[:, None], tf.int64)


def own_row_mask(index, negatives):
    """[B, K] True where a shared negative is the example's own row."""
    return tf.equal(tf.cast(index, tf.int64)[:, None], negatives[None, :])
