import numpy as np
import tensorflow as tf

from mobile_pirl_tf.models import losses


def _fixed_logits(seed=0, batch=5, k=7):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, batch).astype(np.float32) / 0.07,
            rng.uniform(-1, 1, (batch, k)).astype(np.float32) / 0.07)


def test_nce_matches_numpy_reference():
    pos, neg = _fixed_logits()
    num_examples, k = 1000, neg.shape[1]
    z = np.mean(np.exp(np.concatenate([pos[:, None], neg], 1))) * num_examples
    # NumPy reference: P = exp(s) / Z, h = P / (P + K/N), L = -log h(pos) - sum log(1 - h(neg)).
    p_pos, p_neg = np.exp(pos.astype(np.float64)) / z, np.exp(neg.astype(np.float64)) / z
    noise = k / num_examples
    expected = -np.log(p_pos / (p_pos + noise)) - np.sum(np.log(1 - p_neg / (p_neg + noise)), 1)
    got_z = losses.nce_partition(tf.constant(pos), tf.constant(neg), num_examples).numpy()
    np.testing.assert_allclose(got_z, z, rtol=1e-5)
    got = losses.nce_loss(tf.constant(pos), tf.constant(neg), tf.math.log(got_z), num_examples)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)


def test_infonce_matches_numpy_reference():
    pos, neg = _fixed_logits(1)
    logits = np.concatenate([pos[:, None], neg], 1).astype(np.float64)
    expected = -(logits[:, 0] - np.log(np.sum(np.exp(logits), 1)))
    got = losses.infonce_loss(tf.constant(pos), tf.constant(neg)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_masked_negatives_contribute_nothing():
    pos, neg = _fixed_logits(2)
    masked = np.concatenate([neg, np.full((neg.shape[0], 3), losses.MASKED_LOGIT, np.float32)], 1)
    np.testing.assert_allclose(losses.infonce_loss(pos, masked).numpy(),
                               losses.infonce_loss(pos, neg).numpy(), rtol=1e-6)
    log_z = tf.constant(3.0)
    nce_masked = losses.nce_loss(pos, masked, log_z, 1000).numpy()
    assert np.all(np.isfinite(nce_masked))
    # Same terms, only log(K/N) differs with the larger K.
    base = losses.nce_loss(pos, neg, log_z, 1000 * neg.shape[1] / masked.shape[1]).numpy()
    np.testing.assert_allclose(nce_masked, base, rtol=1e-5)


def test_nce_loss_prefers_aligned_positive():
    neg = np.zeros((1, 10), np.float32)
    good = losses.nce_loss(np.array([1 / 0.07], np.float32), neg, 2.0, 100).numpy()
    bad = losses.nce_loss(np.array([-1 / 0.07], np.float32), neg, 2.0, 100).numpy()
    assert good < bad
