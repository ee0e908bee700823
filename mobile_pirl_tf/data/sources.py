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
    """The `Source` of a folder of images (any nesting): what `images.list_image_files`
    accepts, in sorted order; what it skips is named in one warning and counted in
    `skipped`."""
    scan = images.list_image_files(root)
    if not scan.files:
        raise UsageError(f"--data_dir={root} holds no image TensorFlow can read "
                         f"({', '.join(images.IMAGE_EXTENSIONS)}); {scan.summary()}")
    if scan.skipped or scan.repeated_dirs:
        logging.warning("%s: using %d images; %s", root, len(scan.files), scan.summary())
    else:
        logging.info("%s: %d images", root, len(scan.files))
    return Source(name=os.path.abspath(root),
                  keys=tf.data.Dataset.from_tensor_slices(scan.files),
                  num_examples=len(scan.files), decode=images.read_and_decode,
                  skipped=len(scan.skipped), paths=scan.files)


# What a TFDS data set takes to download (TFDS's catalog), printed before downloading it: the
# builder itself knows only after preparing. Others print TFDS's own figure when it has one.
DOWNLOAD_SIZES = {"stl10": "2.46 GiB; 1.86 GiB prepared",
                  "imagenette": "94 MiB for 160px-v2",
                  "cifar10": "162 MiB", "imagenet2012": "about 156 GiB of archives you download"}


PROBE_URL = "https://storage.googleapis.com"  # TFDS's own host: is there a network at all?


def network_reachable(url=PROBE_URL, timeout=10):
    """Whether an HTTP request reaches `url` (through the environment's proxies, as TFDS's
    downloads do): without it TFDS would retry for minutes before failing."""
    import requests

    try:
        requests.head(url, timeout=timeout)
        return True
    except requests.RequestException:
        return False


def _builder(name, data_dir):
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # unknown name or config
        raise UsageError(f"unknown TFDS data set {name!r} ({type(e).__name__}); "
                         "use a name from `tfds.list_builders()` or --data_dir=PATH") from None


def prepare(name, builder, manual_dir=None, log=logging.info):
    """Downloads and prepares a TFDS data set that is not prepared yet, as `tfds build` would
    (TFDS's own progress bars; the size is printed first). A data set that needs a manual
    download (imagenet2012) needs `manual_dir`; no network is one line naming --data_dir."""
    import tensorflow_datasets as tfds

    if builder.is_prepared():
        return
    instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)
    if instructions and not manual_dir:
        needs = " ".join(instructions.split())
        raise UsageError(f"TFDS {name!r} needs a manual download: put the archives in a folder "
                         f"and pass --tfds_manual_dir=FOLDER ({needs[:200]}); it is then "
                         f"prepared into {builder.data_dir} once")
    size = DOWNLOAD_SIZES.get(name.split("/")[0])
    if size is None and builder.info.download_size:
        size = str(builder.info.download_size)
    if not manual_dir and not network_reachable():
        raise UsageError(f"TFDS {name!r} is not prepared in {builder.data_dir} and the network "
                         f"cannot be reached to download it ({PROBE_URL} did not answer); pass "
                         "--data_dir=FOLDER of images, or prepare it where there is internet and "
                         "pass --tfds_data_dir")
    source = f"from --tfds_manual_dir={manual_dir}" if manual_dir else "downloading"
    log(f"TFDS {name!r} is not prepared: {source} ({size or 'size unknown'}) and preparing it "
        f"into {builder.data_dir}, once")
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    except Exception as e:  # noqa: BLE001 - whatever the download raised, one line
        reason = f"{type(e).__name__}: {str(e).splitlines()[0][:160]}" if str(e) else \
            type(e).__name__
        offline = any(w in reason.lower() for w in ("connection", "resolve", "network",
                                                    "timed out", "unreachable", "urlopen"))
        hint = ("no network here? pass --data_dir=FOLDER of images, or prepare it where there "
                "is internet and pass --tfds_data_dir" if offline else
                "rerun to retry (finished downloads are kept), or pass --data_dir=FOLDER of "
                "images")
        raise UsageError(f"could not download and prepare TFDS {name!r} ({reason}); "
                         f"{hint}") from None


def tfds_dataset(name, split, data_dir=None, manual_dir=None):
    """(encoded-image dataset of `split`, builder) of a TFDS data set, downloaded and prepared
    first when it is not (`prepare`)."""
    import tensorflow_datasets as tfds

    builder = _builder(name, data_dir)
    prepare(name, builder, manual_dir)
    splits = builder.info.splits
    if splits and split not in splits:
        raise UsageError(f"TFDS {name!r} has no split {split!r}; it has {sorted(splits)}")
    try:
        ds = builder.as_dataset(split=split, shuffle_files=False,
                                decoders={"image": tfds.decode.SkipDecoding()})
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as e:
        raise UsageError(f"TFDS {name!r} in {builder.data_dir} cannot be read "
                         f"({type(e).__name__}); remove that folder to prepare it again, or "
                         "pass --data_dir=FOLDER of images") from None
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
