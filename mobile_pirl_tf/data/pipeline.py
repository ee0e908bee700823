"""The PIRL input pipeline, entirely tf.data with TF ops:

    per epoch e: a permutation of the examples under (seed, e), the first steps * batch taken
    -> parallel map: decode, image view, transformed view, with a per-example seed
       (seed, e, position)
    -> batch (global, drop remainder) -> prefetch

so the stream of batches is reproducible under --seed, and a resumed run sees exactly the
epochs it would have seen without the interruption. Sources are `sources.Source`s.

With an `ImageCache` (folders whose decoded images fit in `CACHE_LIMIT_BYTES`), the images are
decoded once and read from memory every epoch: the same pixels, so the same views.
"""

import logging
from typing import Optional

import numpy as np
import tensorflow as tf

from mobile_pirl_tf.core.config import TransformParams
from mobile_pirl_tf.data import images, transforms, views
from mobile_pirl_tf.data.sources import Source

CACHE_LIMIT_BYTES = 2 * 1024 ** 3


class ImageCache:
    """Every image of a folder source, decoded once, in one uint8 variable (flattened, in
    example order) with each image's offset and shape; `image(index)` reads one back."""

    def __init__(self, source):
        images = list(source.keys.map(source.decode, num_parallel_calls=tf.data.AUTOTUNE,
                                      deterministic=True).as_numpy_iterator())
        if len(images) != source.num_examples:
            raise ValueError(f"decoded {len(images)} of {source.num_examples} images")
        sizes = np.array([im.size for im in images], np.int64)
        self.nbytes = int(sizes.sum())
        self.offsets = tf.constant(np.concatenate([[0], np.cumsum(sizes)[:-1]]), tf.int64)
        self.shapes = tf.constant(np.array([im.shape for im in images], np.int64))
        self.pixels = tf.Variable(np.concatenate([im.ravel() for im in images]),
                                  trainable=False, name="decoded_images")

    def image(self, index):
        start, shape = self.offsets[index], self.shapes[index]
        return tf.reshape(self.pixels[start:start + tf.reduce_prod(shape)], shape)


_last_cache = {}  # the most recent ImageCache, reused by the next run in this process


def image_cache(source, limit_bytes=CACHE_LIMIT_BYTES):
    """An ImageCache of a folder source whose decoded images take at most `limit_bytes`
    (estimated from the files' headers), else None (TFDS sources: None). The last one made is
    kept, so several runs on one folder in one process (a study) decode it once."""
    if source.paths is None:
        return None
    key = (source.name, tuple(source.paths), limit_bytes)
    if key in _last_cache:
        return _last_cache[key]
    if images.decoded_bytes(source.paths, limit_bytes) > limit_bytes:
        return None
    try:
        cache = ImageCache(source)
    except (ValueError, tf.errors.OpError) as e:  # a file that passed the scan but won't decode
        logging.warning("not keeping the images in memory: %s", str(e).splitlines()[0][:200])
        return None
    logging.info("keeping the %d decoded images in memory (%.0f MB)", source.num_examples,
                 cache.nbytes / 1e6)
    _last_cache.clear()
    _last_cache[key] = cache
    return cache


def example_seed(seed, epoch, position):
    """The [2] int64 seed of one example's views."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(position, tf.int64))


def _epoch_orders(source: Source, examples_per_epoch, seed):
    """epoch (int64 tensor) -> dataset of (key, index, position) for that epoch.

    Folders (random access): position p of epoch e holds example index_shuffle(p) under the seed
    (seed, e): an exact, stateless permutation per epoch, so a resumed run sees the same epochs.
    TFDS (sequential): a shuffle buffer seeded once; reproducible for a given (seed, first epoch).
    """
    if source.paths is not None:
        paths, max_index = tf.constant(source.paths), source.num_examples - 1

        def epoch_elements(epoch):
            def element(position):
                perm_seed = tf.stack([tf.cast(seed, tf.int64), epoch])
                index = tf.random.experimental.index_shuffle(position, perm_seed, max_index)
                return tf.gather(paths, index), index, position
            return tf.data.Dataset.range(examples_per_epoch).map(element)
        return epoch_elements

    indexed = tf.data.Dataset.zip(source.keys, tf.data.Dataset.range(source.num_examples))
    shuffled = indexed.shuffle(source.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)

    def epoch_elements(epoch):
        del epoch
        return shuffled.take(examples_per_epoch).enumerate().map(
            lambda position, key_index: (key_index[0], key_index[1], position))
    return epoch_elements


def synthetic_batch(batch_size, image_size, num_examples=None, seed=0, names=("jigsaw",)):
    """A batch shaped like the pipeline's (random pixels, distinct indices), for building
    variables and timing steps without reading images."""
    rng = np.random.default_rng(seed)
    q = transforms.jigsaw_geometry(image_size).patch_input
    num_examples = num_examples or batch_size
    batch = {
        "image": tf.constant(rng.uniform(0, 255, (batch_size, image_size, image_size, 3)),
                             tf.float32),
        "index": tf.constant(rng.choice(num_examples, batch_size, replace=False), tf.int64)}
    if transforms.ends_in_patches(names):
        batch["patches"] = tf.constant(
            rng.uniform(0, 255, (batch_size, transforms.NUM_PATCHES, q, q, 3)), tf.float32)
    else:
        batch["transformed"] = tf.constant(
            rng.uniform(0, 255, (batch_size, image_size, image_size, 3)), tf.float32)
    return batch


def pretraining_dataset(source: Source, image_size, batch_size, steps_per_epoch, seed=0,
                        first_epoch=0, last_epoch: Optional[int] = None, names=("jigsaw",),
                        params=TransformParams(), cache: Optional[ImageCache] = None,
                        shard=0, num_shards=1, replica_batch=None):
    """The PIRL training batches of epochs [first_epoch, last_epoch) (module docstring).

    Args:
      source: a `data.sources.Source` (folder or TFDS); example i is memory-bank row i.
      image_size: S, the side of the image view; the jigsaw patches are q x q
        (`transforms.jigsaw_geometry(S).patch_input`).
      batch_size: the GLOBAL batch; steps_per_epoch: batches per epoch.
      seed: the seed of the per-epoch order and of every view (`example_seed`).
      first_epoch, last_epoch: the epochs to produce (last_epoch None: forever).
      names: the transformations of v_I^t (`core.config.parse_transforms`); params: their
        `TransformParams`.
      cache: an `ImageCache` to read decoded images from (the same pixels, so the same views).
      shard, num_shards, replica_batch: one input pipeline per worker: this pipeline builds
        only the examples at positions [shard * b, (shard + 1) * b) of every global batch
        (b = batch_size / num_shards), in batches of `replica_batch` (default b), so the
        shards together are exactly the single pipeline's batches.

    Returns:
      A `tf.data.Dataset` of {"image": float32 [b, S, S, 3], "patches": float32
      [b, 9, q, q, 3] (views containing jigsaw) or "transformed": float32 [b, S, S, 3],
      "index": int64 [b]}, pixels in [0, 255], `drop_remainder=True` (static shapes).
    """
    if batch_size % num_shards:
        raise ValueError(f"batch size {batch_size} is not a multiple of {num_shards} shards")
    shard_batch = batch_size // num_shards
    epoch_elements = _epoch_orders(source, steps_per_epoch * batch_size, seed)
    epochs = tf.data.Dataset.range(first_epoch, last_epoch if last_epoch is not None else 2**62)

    def mine(key, index, position):
        return tf.equal(position % batch_size // shard_batch, shard)

    elements = epochs.flat_map(lambda epoch: epoch_elements(epoch).filter(mine).map(
        lambda key, index, position: (key, index, example_seed(seed, epoch, position))))

    def image_of(key, index):
        return cache.image(index) if cache is not None else source.decode(key)

    ds = elements.map(lambda key, index, s: views.pirl_views(image_of(key, index), index, s,
                                                             image_size, names, params),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # A file that passed the integrity scan but still fails to decode is dropped, not fatal.
    ds = ds.ignore_errors(log_warning=True)
    return ds.batch(replica_batch or shard_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
