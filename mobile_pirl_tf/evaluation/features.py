"""Frozen features of an encoder on a labelled split, cached on disk.

Features are the encoder's pooled output on centre crops (`labelled.split_images`). Before they are
extracted, the encoder's batch-norm statistics are re-estimated on `bn_images` train images
(`features.recalibrate`; 0 keeps the encoder's own). The cache file name is keyed by
the encoder file (path, size, modification time), the data (name, file list, labels), the size
and the BN setting, so any change recomputes.
"""

import hashlib
import logging
import math
import os

import numpy as np

from mobile_pirl_tf.core.progress import Progress
from mobile_pirl_tf.core.records import atomic_path
from mobile_pirl_tf.data import labelled
from mobile_pirl_tf.models import batchnorm
from mobile_pirl_tf.models.batchnorm import BN_RECALIBRATION_IMAGES


def _file_fingerprint(path):
    stat = os.stat(path)
    return f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


def cache_key(encoder_path, split, image_size, bn_images=BN_RECALIBRATION_IMAGES):
    """Changes when the encoder file, the data (names and file list), the size or the BN
    recalibration change."""
    h = hashlib.sha256()
    h.update(f"bn-recalibration:{bn_images}".encode())
    h.update(_file_fingerprint(encoder_path).encode())
    h.update(f"{split.name}:{image_size}:{len(split.labels)}".encode())
    for key in split.keys or []:
        h.update(key.encode())
    h.update(split.labels.tobytes())
    return h.hexdigest()[:20]


def _cache_path(cache_dir, encoder_path, split, image_size, bn_images):
    if not cache_dir:
        return None
    key = cache_key(encoder_path, split, image_size, bn_images)
    return os.path.join(cache_dir, f"{split.name.rsplit(':', 1)[-1]}-{key}.npy")


def extract_features(encoder, encoder_path, split, image_size, cache_dir=None,
                     bn_images=BN_RECALIBRATION_IMAGES):
    """Features [n, d] of a split, read from / written to cache_dir when given. The encoder
    must already be BN-recalibrated (see `features_for`)."""
    path = _cache_path(cache_dir, encoder_path, split, image_size, bn_images)
    cached = _load_cached(path)
    if cached is not None:
        return cached
    batches = math.ceil(len(split.labels) / 128)
    with Progress(f"features of {split.name.rsplit(':', 1)[-1]} ({len(split.labels)} images)",
                  batches) as progress:
        features = np.concatenate([encoder.predict_on_batch(batch) for batch in
                                   progress.wrap(labelled.split_images(split, image_size, 128))])
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        with atomic_path(path) as tmp:
            np.save(tmp, features)
    return features


def _load_cached(path):
    """The cached features at path, or None (no cache, no file, or a damaged file, which is
    removed with a warning so they are computed again)."""
    if not path or not os.path.exists(path):
        return None
    try:
        features = np.load(path)
    except (ValueError, EOFError, OSError) as e:
        logging.warning("%s is damaged (%s); computing the features again", path,
                        str(e).splitlines()[0][:120])
        os.remove(path)
        return None
    logging.info("features from cache %s", path)
    return features


def recalibrate(encoder, split, image_size, num_images=BN_RECALIBRATION_IMAGES, seed=0):
    """Re-estimates the encoder's batch-norm statistics on the centre crops of `num_images`
    examples of a labelled split (a seeded subset; 0: nothing changes). Returns the images
    used."""
    if num_images <= 0:
        return 0
    return batchnorm.recalibrate(encoder, labelled.seeded_crops(split, image_size, num_images,
                                                                seed))


def features_for(encoder, encoder_path, train, test, image_size, cache_dir=None,
                 bn_images=BN_RECALIBRATION_IMAGES):
    """(train, test) features: from the cache, or after recalibrating BN on `bn_images` train
    images (0: keep the encoder's own moving statistics)."""
    paths = [_cache_path(cache_dir, encoder_path, s, image_size, bn_images) for s in (train, test)]
    if any(_load_cached(p) is None for p in paths):
        recalibrate(encoder, train, image_size, bn_images)
    return tuple(extract_features(encoder, encoder_path, s, image_size, cache_dir, bn_images)
                 for s in (train, test))
