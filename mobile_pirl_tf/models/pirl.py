"""The PIRL model (Misra & van der Maaten, CVPR 2020) as a `keras.Model` with a custom `train_step`.

Total loss (PIRL Eq. 5), with m_I the memory-bank row of image I:

    L = lambda * L(m_I, g(v_I^t)) + (1 - lambda) * L(m_I, f(v_I)),   lambda = 0.5

each term drawing its own negatives. v_I^t is the transformed view (`transforms`): 9 jigsaw
patches (batch key "patches", head g) or, for a view that ends in an image, one image
(batch key "transformed", a head shaped like f with its own weights, f_t). `train_step` runs
inside `tf.distribute` (model.fit calls it through `strategy.run`): the loss is averaged over
the GLOBAL batch (gradients are summed over replicas), and the bank update uses the
all-gathered embeddings and indices so every replica's copy of the bank stays identical.

Weight decay is the coupled L2 of VISSL/PyTorch SGD (wd * w added to the gradient before
momentum), applied to kernels only (no batch-norm parameters, no biases).
"""

import keras
import tensorflow as tf

from mobile_pirl_tf.core.config import TrainConfig
from mobile_pirl_tf.models import heads, losses, memory_bank

TRANSFORMED_KINDS = ("patches", "image")


_DEFAULTS = TrainConfig()  # train.py's defaults: the one source of defaults


class PIRL(keras.Model):
    """PIRL: one shared backbone, heads f and g (or f_t), the memory bank and Eq. 5's loss.

    Args:
      backbone: a `keras.Model` mapping float32 pixels `[N, H, W, 3]` in [0, 255] (any H, W:
        images and patches) to pooled features `[N, d]`.
      num_examples: rows of the memory bank, one per training image (>= 2).
      embedding_dim, head, num_negatives, temperature, pirl_lambda, bank_momentum, loss,
        weight_decay, shared_negatives, seed: as train.py's flags of the same names
        (`core.config.TrainConfig`, whose defaults these are); `num_negatives` is capped at
        `num_examples - 1`.
      transformed: "patches" (the view contains jigsaw: head g over 9 patches) or "image"
        (head f_t, shaped like f).

    Call: `model(batch)` with batch {"image": [B, S, S, 3], "patches": [B, 9, q, q, 3] or
    "transformed": [B, S, S, 3]} float32 pixels returns (f(v_I), g(v_I^t)), both
    `[B, embedding_dim]` float32, unit-norm.
    """

    def __init__(self, backbone, num_examples, embedding_dim=_DEFAULTS.embedding_dim,
                 head=_DEFAULTS.head, num_negatives=_DEFAULTS.num_negatives,
                 temperature=_DEFAULTS.temperature, pirl_lambda=_DEFAULTS.pirl_lambda,
                 bank_momentum=_DEFAULTS.bank_momentum, loss=_DEFAULTS.loss,
                 weight_decay=_DEFAULTS.weight_decay,
                 shared_negatives=_DEFAULTS.shared_negatives, seed=_DEFAULTS.seed,
                 transformed="patches", **kwargs):
        super().__init__(**kwargs)
        if loss not in losses.LOSSES:
            raise ValueError(f"loss must be one of {losses.LOSSES}, got {loss!r}")
        if num_examples < 2:
            raise ValueError(f"PIRL needs at least 2 training examples, got {num_examples}")
        self.backbone = backbone
        # Heads and bank in float32 under a mixed-precision policy: embeddings, logits and the
        # loss stay float32 whatever the backbone computes in.
        self.image_head = heads.ImageHead(embedding_dim, head, name="f", dtype="float32")
        if transformed not in TRANSFORMED_KINDS:
            raise ValueError(f"transformed must be one of {TRANSFORMED_KINDS}, got {transformed!r}")
        self.transformed = transformed
        if transformed == "patches":
            self.transformed_head = heads.JigsawHead(embedding_dim, head, name="g",
                                                     dtype="float32")
        else:
            self.transformed_head = heads.ImageHead(embedding_dim, head, name="f_t",
                                                    dtype="float32")
        self.bank = memory_bank.MemoryBank(num_examples, embedding_dim, bank_momentum, seed,
                                           dtype="float32",
                                           name="memory_bank")
        self.num_examples = int(num_examples)
        # Capped by the data set: at most every other row.
        self.num_negatives = int(min(num_negatives, num_examples - 1))
        self.temperature, self.pirl_lambda = float(temperature), float(pirl_lambda)
        self.loss_name, self.weight_decay = loss, float(weight_decay)
        self.shared_negatives, self.seed = bool(shared_negatives), int(seed)
        # NCE normaliser log Z: estimated on the first batch (VISSL), then fixed.
        self.log_z = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                     aggregation="only_first_replica", name="nce_log_z")
        self.z_ready = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                       aggregation="only_first_replica", name="nce_z_ready")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in (
            "loss", "loss_transformed", "loss_image", "positive_similarity", "negative_similarity")}

    def build(self, input_shape):
        """Sub-layers build on the first call (the backbone takes images and patches)."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Nothing to do: every variable is built before fit (`training.build_variables`).
        Keras' version draws a batch and averages it across replicas, which a multi-worker
        strategy cannot do with a dict of tensors (Keras 3.15)."""

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, inputs, training=False):
        """Returns (f(v_I), g(v_I^t) or f_t(v_I^t)), both [B, embedding_dim] and unit-norm."""
        z_image = self.image_head(self.backbone(inputs["image"], training=training))
        if self.transformed == "image":
            return z_image, self.transformed_head(self.backbone(inputs["transformed"],
                                                                training=training))
        patches = inputs["patches"]
        batch, num_patches = tf.shape(patches)[0], patches.shape[1]
        # The 9 patches of the batch go through the backbone as one batch of B * 9.
        patch_features = self.backbone(tf.reshape(patches, [-1, *patches.shape[2:]]),
                                       training=training)
        patch_features = tf.reshape(patch_features, [batch, num_patches, -1])
        return z_image, self.transformed_head(patch_features)

    def train_step(self, data):
        """One PIRL step on a replica's batch (model.fit runs it under the strategy).

        Args:
          data: {"image": float32 [b, S, S, 3], "patches": float32 [b, 9, q, q, 3] or
            "transformed": float32 [b, S, S, 3], "index": int64 [b] (memory-bank rows)}, b the
            per-replica batch (`data.pipeline.pretraining_dataset`).

        Returns:
          {"loss", "loss_transformed", "loss_image", "positive_similarity",
          "negative_similarity", "learning_rate"[, "nce_log_z" under NCE]}: float32 scalars,
          the running means of the epoch.
        """
        index = tf.cast(data["index"], tf.int64)
        ctx = tf.distribute.get_replica_context()
        step = self.optimizer.iterations
        with tf.GradientTape() as tape:
            z_image, z_transformed = self(data, training=True)
            positives = self.bank.read(index)          # read BEFORE the update below
            loss_transformed = self.contrastive_loss(z_transformed, positives, index, step, term=0)
            loss_image = self.contrastive_loss(z_image, positives, index, step, term=1)
            per_example = (self.pirl_lambda * loss_transformed
                           + (1 - self.pirl_lambda) * loss_image)
            global_batch = tf.shape(index)[0] * ctx.num_replicas_in_sync
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            scaled_loss = self.optimizer.scale_loss(loss)  # loss scaling under mixed float16
        variables = self.trainable_variables
        gradients = self.add_weight_decay(tape.gradient(scaled_loss, variables), variables, ctx)
        self.optimizer.apply(gradients, variables)
        self.bank.update(all_gather(ctx, tf.stop_gradient(z_image)), all_gather(ctx, index))

        for name, value in (("loss", per_example), ("loss_transformed", loss_transformed),
                            ("loss_image", loss_image)):
            self.trackers[name].update_state(value)
        self.trackers["positive_similarity"].update_state(tf.reduce_sum(z_image * positives, -1))
        results = {name: tracker.result() for name, tracker in self.trackers.items()}
        results["learning_rate"] = self.optimizer.learning_rate
        if self.loss_name == "nce":  # the NCE normaliser; InfoNCE has none
            results["nce_log_z"] = self.log_z.value
        if _multi_worker(ctx):  # Keras averages each output over workers along axis 0 (3.15)
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def contrastive_loss(self, z, positives, index, step, term):
        """Per-example NCE or InfoNCE of embeddings z against the bank (one term of Eq. 5)."""
        ctx = tf.distribute.get_replica_context()
        seed = tf.stack([tf.cast(self.seed, tf.int64), tf.cast(step, tf.int64) * 2 + term])
        batch = tf.shape(index)[0]
        negatives = memory_bank.sample_negatives(
            index, self.num_negatives, self.num_examples, seed,
            global_offset=ctx.replica_id_in_sync_group * batch,
            global_batch=batch * ctx.num_replicas_in_sync, shared=self.shared_negatives)
        rows = self.bank.read(negatives)
        pos_logits = tf.reduce_sum(z * positives, -1) / self.temperature
        if self.shared_negatives:                      # [B, d] x [K, d] -> [B, K]
            neg_logits = tf.matmul(z, rows, transpose_b=True) / self.temperature
            neg_logits = tf.where(memory_bank.own_row_mask(index, negatives),
                                  losses.MASKED_LOGIT, neg_logits)
        else:                                          # [B, d] x [B, K, d] -> [B, K]
            neg_logits = tf.einsum("bd,bkd->bk", z, rows) / self.temperature
        if term == 1:  # mean cosine to the negatives: z . mean(rows), O((B + K) d) not O(B K)
            self.trackers["negative_similarity"].update_state(
                tf.reduce_sum(z * tf.reduce_mean(rows, axis=-2), -1))
        if self.loss_name == "infonce":
            return losses.infonce_loss(pos_logits, neg_logits)
        self.maybe_set_partition(pos_logits, neg_logits, ctx)
        return losses.nce_loss(pos_logits, neg_logits, tf.stop_gradient(self.log_z.value),
                               self.num_examples)

    def maybe_set_partition(self, pos_logits, neg_logits, ctx):
        """On the first batch only, fix log Z from the whole global batch (VISSL)."""
        ready = self.z_ready.value > 0
        zero = tf.zeros([], pos_logits.dtype)
        terms = tf.cond(ready, lambda: (zero, zero), lambda: losses.nce_partition_terms(
            tf.stop_gradient(pos_logits), tf.stop_gradient(neg_logits)))
        # Outside the cond: a collective must run on every replica at every step.
        total, count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, list(terms))
        self.log_z.assign(tf.cond(ready, lambda: self.log_z.value,
                                  lambda: tf.math.log(total / count * self.num_examples)))
        self.z_ready.assign(1.0)

    def add_weight_decay(self, gradients, variables, ctx):
        """Coupled L2 on kernels (ndim > 1): g + wd * w, divided by the replica count because
        the optimizer sums gradients over replicas (and scaled like the loss, which a
        LossScaleOptimizer unscales)."""
        if not self.weight_decay:
            return gradients
        scale = self.weight_decay / ctx.num_replicas_in_sync
        return [g + self.optimizer.scale_loss(scale * v.value)
                if g is not None and len(v.shape) > 1 else g
                for g, v in zip(gradients, variables)]


def _multi_worker(ctx):
    return isinstance(ctx.strategy, tf.distribute.MultiWorkerMirroredStrategy)


def all_gather(ctx, value):
    """The values of every replica, concatenated in replica order. Under a multi-worker
    strategy the value is first placed on this replica's device: the all-gather needs a device
    to gather to, which a tensor made inside the traced step does not carry (TensorFlow 2.21)."""
    if _multi_worker(ctx):
        local = ctx.strategy.extended.worker_devices  # replica r of a worker: local r % count
        replica = int(tf.get_static_value(ctx.replica_id_in_sync_group))
        with tf.device(local[replica % len(local)]):
            value = tf.identity(value)
    return ctx.all_gather(value, 0)
