"""Contrastive losses on memory-bank logits (PIRL Eq. 2-5).

s(u, v) = cos(u, v) / tau (train.py's --temperature: 0.2 by default, the paper's 0.07 with
--recipe=paper). For each example: one positive logit (the bank row
m_I against the embedding) and K negative logits (K bank rows drawn uniformly).
Both losses return a per-example vector; the caller averages over the GLOBAL batch.

NCE (NPID / PIRL Eq. 3-4, noise distribution uniform over the |D| rows):
    P(v) = exp(s(v)) / Z,    h(v) = P(v) / (P(v) + K / |D|),
    L = -log h(positive) - sum_k log(1 - h(negative_k)).
Z is VISSL's default: mean(exp(s)) * |D| over the first batch, then kept fixed.
In log space: -log h = softplus(log(K/|D|) - log P) and -log(1 - h) = softplus(log P - log(K/|D|)).

InfoNCE (VISSL loss_type: cross_entropy): cross-entropy of the positive among 1 + K logits.

Masked negatives (logit = MASKED_LOGIT) contribute nothing to either loss.
"""

import math

import tensorflow as tf

from mobile_pirl_tf.core.config import LOSSES  # noqa: F401 - re-exported

MASKED_LOGIT = -1e9


def nce_partition_terms(pos_logits, neg_logits):
    """(sum of exp(s), number of logits) over the positives and unmasked negatives; summed over
    replicas they give the global-batch Z estimate."""
    exp = tf.concat([tf.exp(pos_logits)[:, None], tf.exp(neg_logits)], axis=1)
    valid = tf.concat([tf.ones_like(pos_logits)[:, None],
                       tf.cast(neg_logits > MASKED_LOGIT / 2, exp.dtype)], axis=1)
    return tf.reduce_sum(exp * valid), tf.reduce_sum(valid)


def nce_partition(pos_logits, neg_logits, num_examples):
    """VISSL's Z estimate: mean of exp(s) over positives and negatives, times |D|."""
    total, count = nce_partition_terms(pos_logits, neg_logits)
    return total / count * num_examples


def nce_loss(pos_logits, neg_logits, log_z, num_examples):
    """Per-example NCE loss. pos_logits [B], neg_logits [B, K], log_z scalar log Z."""
    num_negatives = tf.cast(tf.shape(neg_logits)[1], pos_logits.dtype)
    log_noise = tf.math.log(num_negatives) - math.log(num_examples)    # log(K / |D|)
    pos_term = tf.nn.softplus(log_noise - (pos_logits - log_z))
    neg_term = tf.nn.softplus((neg_logits - log_z) - log_noise)
    return pos_term + tf.reduce_sum(neg_term, axis=1)


def infonce_loss(pos_logits, neg_logits):
    """Per-example InfoNCE: -log softmax of the positive among [positive, negatives]."""
    logits = tf.concat([pos_logits[:, None], neg_logits], axis=1)
    return tf.reduce_logsumexp(logits, axis=1) - pos_logits
