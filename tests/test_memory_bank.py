import numpy as np
import pytest
import tensorflow as tf

from mobile_pirl_tf.models import memory_bank


def test_init_rows_are_unit_norm():
    bank = memory_bank.MemoryBank(50, 16, seed=3)
    np.testing.assert_allclose(np.linalg.norm(bank.rows.numpy(), axis=1), 1.0, rtol=1e-5)


def test_update_is_ema_renormalised_and_touches_only_its_rows():
    bank = memory_bank.MemoryBank(20, 8, momentum=0.5, seed=0)
    before = bank.rows.numpy().copy()
    index = tf.constant([3, 11, 7], tf.int64)
    emb = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    bank.update(tf.constant(emb), index)
    after = bank.rows.numpy()
    expected = 0.5 * before[[3, 11, 7]] + 0.5 * emb
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(after[[3, 11, 7]], expected, rtol=1e-5, atol=1e-6)
    untouched = np.setdiff1d(np.arange(20), [3, 11, 7])
    np.testing.assert_array_equal(after[untouched], before[untouched])


@pytest.mark.parametrize("size", [2, 5, 1000])
def test_negatives_never_contain_own_row_and_cover_the_rest(size):
    index = tf.constant(np.arange(min(size, 64)) % size, tf.int64)
    neg = memory_bank.sample_negatives(index, 2000, size, tf.constant([1, 2], tf.int64)).numpy()
    assert neg.shape == (len(index), 2000)
    assert np.all(neg != index.numpy()[:, None])
    assert neg.min() >= 0 and neg.max() < size
    if size <= 5:  # every other row is drawn
        for i, row in zip(index.numpy(), neg):
            assert set(row) == set(range(size)) - {i}


def test_negatives_are_uniform():
    neg = memory_bank.sample_negatives(tf.constant([0], tf.int64), 90000, 10,
                                       tf.constant([0, 0], tf.int64)).numpy()
    counts = np.bincount(neg.ravel(), minlength=10)
    assert counts[0] == 0
    np.testing.assert_allclose(counts[1:] / 90000, 1 / 9, atol=0.01)


def test_global_draw_is_split_by_replica():
    index = tf.constant([0, 1, 2, 3], tf.int64)
    seed = tf.constant([5, 6], tf.int64)
    whole = memory_bank.sample_negatives(index, 50, 100, seed).numpy()
    halves = [memory_bank.sample_negatives(index[i * 2:(i + 1) * 2], 50, 100, seed,
                                           global_offset=i * 2, global_batch=4).numpy()
              for i in range(2)]
    np.testing.assert_array_equal(np.concatenate(halves), whole)


def test_shared_negatives_and_own_row_mask():
    index = tf.constant([0, 1, 2], tf.int64)
    neg = memory_bank.sample_negatives(index, 30, 4, tf.constant([0, 1], tf.int64), shared=True)
    assert neg.shape == (30,)
    mask = memory_bank.own_row_mask(index, neg).numpy()
    np.testing.assert_array_equal(mask, index.numpy()[:, None] == neg.numpy()[None, :])
