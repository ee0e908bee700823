"""Unlabelled image sources for pretraining.

A `Source` is a list of keys (file paths, or encoded image bytes for TFDS) with a stable
example index 0..N-1 (the memory-bank row) and a TF function that decodes a key to a uint8 RGB
image: a folder of images (any nesting), or a TFDS data set. The pretraining pipeline built on
it is `pipeline.pretraining_dataset`; `sample_images` draws seeded centre crops of it.
"""

import dataclasses
import logging
import os
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.data import images

# TFDS names -> the split used for unlabelled pretraining.
PRETRAIN_SPLITS = {"stl10": "unlabelled"}


TFDS_SHUFFLE_BUFFER = 10_000


@dataclasses.dataclass
class Source:
    """`keys` are strings; key i belongs to example (memory-bank row) i."""
    name: str
    keys: tf.data.Dataset
    num_examples: int
    decode: Callable[[tf.Tensor], tf.Tensor]
    skipped: int = 0
    paths: Optional[list] = None      # random access (folders): exact per-epoch permutations
    shuffle_buffer: int = 0           # sequential sources (TFDS) only


def folder_source(root):
    other = {}
    files, not_images, corrupt = images.list_image_files(root, other)
    if not files:
        raise UsageError(f"--data_dir={root} holds no readable image "
                         f"({', '.join(images.IMAGE_EXTENSIONS)}); {corrupt} corrupt, "
                         f"{not_images} other files")
    if corrupt or not_images or other:
        extra = "".join(f", {n} {what}" for what, n in other.items())
        logging.warning("%s: using %d images; skipped %d corrupt or truncated image files and %d "
                        "non-image files%s", root, len(files), corrupt, not_images, extra)
    else:
        logging.info("%s: %d images", root, len(files))
    return Source(name=os.path.abspath(root), keys=tf.data.Dataset.from_tensor_slices(files),
                  num_examples=len(files), decode=images.read_and_decode,
                  skipped=corrupt + not_images + other.get("names not UTF-8", 0),
                  paths=files)


def _not_prepared(name, builder):
    return UsageError(
        f"TFDS data set {name!r} is not prepared in {builder.data_dir} and cannot be downloaded "
        f"here; prepare it on a machine with internet (`tfds build {name}`) and pass "
        "--tfds_data_dir, or use --data_dir=PATH with a folder of images")


def tfds_dataset(name, split, data_dir=None, manual_dir=None):
    """(encoded-image dataset of `split`, builder) of a prepared TFDS data set.

    Nothing is downloaded: a data set that is not prepared gives a one-line `UsageError`
    saying what to do, except imagenet2012-style ones prepared from `manual_dir`.
    """
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # unknown name or config
        raise UsageError(f"unknown TFDS data set {name!r} ({type(e).__name__}); "
                         "use a name from `tfds.list_builders()` or --data_dir=PATH") from None
    if manual_dir and not builder.is_prepared():
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        except Exception as e:  # noqa: BLE001
            raise UsageError(f"could not prepare TFDS {name!r} from --tfds_manual_dir="
                             f"{manual_dir}: {str(e).splitlines()[0][:200]}") from None
    splits = builder.info.splits
    if splits and split not in splits:
        raise UsageError(f"TFDS {name!r} has no split {split!r}; it has {sorted(splits)}")
    try:
        ds = builder.as_dataset(split=split, shuffle_files=False,
                                decoders={"image": tfds.decode.SkipDecoding()})
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError):
        raise _not_prepared(name, builder) from None
    return ds, builder


def tfds_source(name, split=None, data_dir=None, manual_dir=None):
    split = split or PRETRAIN_SPLITS.get(name.split("/")[0], "train")
    ds, builder = tfds_dataset(name, split, data_dir, manual_dir)
    keys = ds.map(lambda ex: ex["image"], num_parallel_calls=tf.data.AUTOTUNE)
    if split in builder.info.splits:
        num = builder.info.splits[split].num_examples
    else:  # e.g. under tfds.testing.mock_data
        num = int(keys.cardinality())
        if num < 0:
            num = int(keys.reduce(0, lambda count, _: count + 1))
    return Source(name=f"tfds:{name}:{split}", keys=keys, num_examples=num,
                  decode=images.decode_image, shuffle_buffer=max(1, min(num, TFDS_SHUFFLE_BUFFER)))


def make_source(dataset="stl10", data_dir=None, tfds_data_dir=None, tfds_manual_dir=None):
    """A folder source when `data_dir` is given, else the TFDS data set `dataset`."""
    if data_dir:
        return folder_source(data_dir)
    return tfds_source(dataset, data_dir=tfds_data_dir, manual_dir=tfds_manual_dir)


def sample_images(source, count, image_size, seed=0, skip=0):
    """`count` centre-cropped float images [count, S, S, 3] of a data source, after skipping the
    first `skip` of a seeded order (so two calls with different `skip` do not overlap)."""
    crops = list(sample_dataset(source, count, image_size, seed, skip).as_numpy_iterator())
    return np.stack(crops) if crops else np.zeros((0, image_size, image_size, 3), np.float32)


def sample_dataset(source, count, image_size, seed=0, skip=0):
    """The images of `sample_images` as a tf.data.Dataset (unbatched, in order)."""
    if source.paths is not None:
        order = np.random.default_rng(seed).permutation(len(source.paths))[skip:skip + count]
        keys = tf.data.Dataset.from_tensor_slices(
            tf.constant([source.paths[i] for i in order], tf.string))
    else:
        keys = source.keys.shuffle(min(source.num_examples, 10_000), seed=seed,
                                   reshuffle_each_iteration=False).skip(skip).take(count)
    crops = keys.map(lambda k: images.centre_crop(source.decode(k), image_size),
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return crops.ignore_errors()
