"""Image sources (a folder of images, or a TFDS data set) and the PIRL input pipeline.

A `Source` is a list of keys (file paths, or encoded image bytes for TFDS) with a stable
example index 0..N-1 (the memory-bank row) and a TF function that decodes a key to a uint8
RGB image. The pipeline, entirely tf.data with TF ops:

    per epoch e: a permutation of the examples under (seed, e), the first steps * batch taken
    -> parallel map: decode, image view, jigsaw view, with a per-example seed (seed, e, position)
    -> batch (global, drop remainder) -> prefetch

so the stream of batches is reproducible under --seed, and a resumed run sees exactly the
epochs it would have seen without the interruption.
"""

import dataclasses
import logging
import os
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from mobile_pirl_tf import UsageError, transforms, views

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
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


def decode_image(encoded):
    """Encoded JPEG / PNG / BMP / GIF (first frame) / WebP bytes -> uint8 [H, W, 3].

    Greyscale, RGBA and palette images become RGB.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def read_and_decode(path):
    return decode_image(tf.io.read_file(path))


def _is_readable_image(path):
    """Cheap integrity check (header + structure, no full decode) with Pillow."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not an image we can use"
        return False


def list_image_files(root):
    """Sorted image files under `root` (any nesting) and counts of what was skipped."""
    if not os.path.isdir(root):
        raise UsageError(f"--data_dir={root} is not a directory")
    files, not_images, corrupt = [], 0, 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                not_images += 1
            elif _is_readable_image(path):
                files.append(path)
            else:
                corrupt += 1
    return files, not_images, corrupt


def folder_source(root):
    files, not_images, corrupt = list_image_files(root)
    if not files:
        raise UsageError(f"--data_dir={root} holds no readable image "
                         f"({', '.join(IMAGE_EXTENSIONS)}); {corrupt} corrupt, {not_images} other files")
    if corrupt or not_images:
        logging.warning("%s: using %d images; skipped %d corrupt image files and %d non-image files",
                        root, len(files), corrupt, not_images)
    else:
        logging.info("%s: %d images", root, len(files))
    return Source(name=os.path.abspath(root), keys=tf.data.Dataset.from_tensor_slices(files),
                  num_examples=len(files), decode=read_and_decode,
                  skipped=corrupt + not_images, paths=files)


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
            raise UsageError(f"could not prepare TFDS {name!r} from --tfds_manual_dir={manual_dir}: "
                             f"{str(e).splitlines()[0][:200]}") from None
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
    return Source(name=f"tfds:{name}:{split}", keys=keys, num_examples=num, decode=decode_image,
                  shuffle_buffer=max(1, min(num, TFDS_SHUFFLE_BUFFER)))


def make_source(dataset="stl10", data_dir=None, tfds_data_dir=None, tfds_manual_dir=None):
    """A folder source when `data_dir` is given, else the TFDS data set `dataset`."""
    if data_dir:
        return folder_source(data_dir)
    return tfds_source(dataset, data_dir=tfds_data_dir, manual_dir=tfds_manual_dir)


def example_seed(seed, epoch, position):
    """The [2] int64 seed of one example's views."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(position, tf.int64))


def pirl_views(image, index, seed, image_size, names=("jigsaw",),
               params=transforms.TransformParams()):
    """One training element: {"image": v_I, "patches" or "transformed": v_I^t, "index": i}."""
    image_seed, transformed_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    key = "patches" if transforms.ends_in_patches(names) else "transformed"
    return {"image": views.image_view(image, image_size, image_seed, params.view_min_scale),
            key: transforms.transformed_view(image, image_size, names, transformed_seed, params),
            "index": index}


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
    q = views.jigsaw_geometry(image_size).patch_input
    num_examples = num_examples or batch_size
    batch = {
        "image": tf.constant(rng.uniform(0, 255, (batch_size, image_size, image_size, 3)), tf.float32),
        "index": tf.constant(rng.choice(num_examples, batch_size, replace=False), tf.int64)}
    if transforms.ends_in_patches(names):
        batch["patches"] = tf.constant(
            rng.uniform(0, 255, (batch_size, views.NUM_PATCHES, q, q, 3)), tf.float32)
    else:
        batch["transformed"] = tf.constant(
            rng.uniform(0, 255, (batch_size, image_size, image_size, 3)), tf.float32)
    return batch


def pretraining_dataset(source: Source, image_size, batch_size, steps_per_epoch, seed=0,
                        first_epoch=0, last_epoch: Optional[int] = None, names=("jigsaw",),
                        params=transforms.TransformParams()):
    """Batches for epochs [first_epoch, last_epoch) (forever when last_epoch is None)."""
    epoch_elements = _epoch_orders(source, steps_per_epoch * batch_size, seed)
    epochs = tf.data.Dataset.range(first_epoch, last_epoch if last_epoch is not None else 2**62)
    elements = epochs.flat_map(lambda epoch: epoch_elements(epoch).map(
        lambda key, index, position: (key, index, example_seed(seed, epoch, position))))
    ds = elements.map(lambda key, index, s: pirl_views(source.decode(key), index, s, image_size,
                                                       names, params),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # A file that passed the integrity scan but still fails to decode is dropped, not fatal.
    ds = ds.ignore_errors(log_warning=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
