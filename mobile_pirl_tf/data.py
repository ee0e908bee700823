"""Image data: unlabelled sources for pretraining, labelled splits for evaluation.

A `Source` (unlabelled) is a list of keys (file paths, or encoded image bytes for TFDS) with a
stable example index 0..N-1 (the memory-bank row) and a TF function that decodes a key to a
uint8 RGB image: a folder of images (any nesting), or a prepared TFDS data set. The
pretraining pipeline built on it is `pipeline.pretraining_dataset`.

A `LabelledSplit` is the train or test half of labelled data: a folder with train/<class>/...
and test/<class>/..., or a TFDS data set with train and test splits. Class indices follow the
sorted folder names (TFDS: its labels). `split_images` gives its centre crops in order.
"""

import dataclasses
import logging
import os
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from mobile_pirl_tf import UsageError

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
    """Cheap integrity check (header + structure, no full decode) with Pillow, plus, for a JPEG,
    its end-of-image marker in the last 4 KB (Pillow's verify passes a truncated JPEG, which
    then fails to decode mid-epoch). In entropy-coded data 0xFF is stuffed as FF00, so FFD9
    is only ever the marker."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            kind = im.format
            im.verify()
        if kind == "JPEG":
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - 4096))
                return b"\xff\xd9" in f.read()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not an image we can use"
        return False


def decoded_bytes(paths, stop_above=None):
    """What the images take decoded to RGB uint8, from their headers (no decoding); counting
    stops as soon as the total exceeds `stop_above`."""
    from PIL import Image

    total = 0
    for path in paths:
        with Image.open(path) as im:
            total += im.size[0] * im.size[1] * 3
        if stop_above is not None and total > stop_above:
            break
    return total


def _utf8(name):
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a name that is not UTF-8 (surrogate-escaped by os.walk)
        return False


def list_image_files(root, skipped=None):
    """Sorted image files under `root` (any nesting) and counts of what was skipped: files that
    are not images, images that do not decode (corrupt or truncated). Names that are not UTF-8
    (TensorFlow's string tensors cannot hold them) are skipped too; directory links are
    followed, but no directory is visited twice (a link loop would repeat images, so that an
    image's own copies became its negatives): `skipped` (a dict) receives those counts."""
    if not os.path.isdir(root):
        raise UsageError(f"--data_dir={root} is not a directory")
    files, not_images, corrupt = [], 0, 0
    skipped = {} if skipped is None else skipped
    visited = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        visited.add(os.path.realpath(dirpath))
        kept = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in visited:
                skipped["repeated directories"] = skipped.get("repeated directories", 0) + 1
            else:
                visited.add(real)
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            if not _utf8(path):
                skipped["names not UTF-8"] = skipped.get("names not UTF-8", 0) + 1
            elif not name.lower().endswith(IMAGE_EXTENSIONS):
                not_images += 1
            elif _is_readable_image(path):
                files.append(path)
            else:
                corrupt += 1
    return files, not_images, corrupt


def folder_source(root):
    other = {}
    files, not_images, corrupt = list_image_files(root, other)
    if not files:
        raise UsageError(f"--data_dir={root} holds no readable image "
                         f"({', '.join(IMAGE_EXTENSIONS)}); {corrupt} corrupt, "
                         f"{not_images} other files")
    if corrupt or not_images or other:
        extra = "".join(f", {n} {what}" for what, n in other.items())
        logging.warning("%s: using %d images; skipped %d corrupt or truncated image files and %d "
                        "non-image files%s", root, len(files), corrupt, not_images, extra)
    else:
        logging.info("%s: %d images", root, len(files))
    return Source(name=os.path.abspath(root), keys=tf.data.Dataset.from_tensor_slices(files),
                  num_examples=len(files), decode=read_and_decode,
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
    return Source(name=f"tfds:{name}:{split}", keys=keys, num_examples=num, decode=decode_image,
                  shuffle_buffer=max(1, min(num, TFDS_SHUFFLE_BUFFER)))


def make_source(dataset="stl10", data_dir=None, tfds_data_dir=None, tfds_manual_dir=None):
    """A folder source when `data_dir` is given, else the TFDS data set `dataset`."""
    if data_dir:
        return folder_source(data_dir)
    return tfds_source(dataset, data_dir=tfds_data_dir, manual_dir=tfds_manual_dir)


# --- labelled data (evaluation) ---------------------------------------------------------------

@dataclasses.dataclass
class LabelledSplit:
    name: str                 # identifies the data for the cache
    keys: list                # file paths (folder) or None (TFDS: images come from `dataset`)
    labels: np.ndarray
    classes: list
    dataset: object = None    # TFDS: a tf.data.Dataset of (encoded image, label)


def _class_folders(root):
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                  and not d.startswith("."))


def folder_splits(root):
    """(train, test) LabelledSplits from root/train/<class>/... and root/test/<class>/..."""
    for split in ("train", "test"):
        if not os.path.isdir(os.path.join(root, split)):
            raise UsageError(f"--data_dir={root} has no {split}/ folder; labelled data must be "
                             "laid out as train/<class>/... and test/<class>/...")
    classes = _class_folders(os.path.join(root, "train"))
    if not classes:
        raise UsageError(f"{root}/train has no class folders")
    unknown = sorted(set(_class_folders(os.path.join(root, "test"))) - set(classes))
    if unknown:
        raise UsageError(f"{root}/test has classes that train/ lacks: {', '.join(unknown[:5])}; "
                         "every test class needs training examples")
    splits = []
    for split in ("train", "test"):
        keys, labels = [], []
        for label, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            if not os.path.isdir(folder):
                continue
            files, _, _ = list_image_files(folder)
            keys += files
            labels += [label] * len(files)
        if not keys:
            raise UsageError(f"{root}/{split} holds no readable images")
        splits.append(LabelledSplit(f"{os.path.abspath(root)}:{split}", keys,
                                    np.array(labels, np.int64), classes))
    return tuple(splits)


def balanced_subset(split, count, seed=0):
    """A class-balanced, seeded subset of a labelled split with about `count` examples
    (`count // classes` of each class, all of a smaller class); the split itself when `count`
    is 0 or covers it. Folder splits only (their files are known)."""
    if not count or count >= len(split.labels):
        return split
    if split.keys is None:
        raise UsageError("a subset of labelled data needs a folder (--eval_data_dir), not TFDS")
    per_class = max(1, count // len(split.classes))
    size = int(np.minimum(np.bincount(split.labels, minlength=len(split.classes)),
                          per_class).sum())
    return per_class_subset(split, per_class, seed, f"subset{size}")


def per_class_subset(split, per_class, seed, tag):
    """`per_class` examples of every class of a folder split (all of a smaller class), drawn
    under `seed` from each class's files in listing order, kept in split order; its name
    records the draw ("<name>:<tag>-seed<seed>"), so cached features never mix subsets."""
    rng = np.random.default_rng(seed)
    chosen = np.sort(np.concatenate([
        rng.permutation(np.flatnonzero(split.labels == c))[:per_class]
        for c in range(len(split.classes))]))
    return LabelledSplit(f"{split.name}:{tag}-seed{seed}",
                         [split.keys[i] for i in chosen], split.labels[chosen], split.classes)


def tfds_splits(name, data_dir=None):
    out = []
    for split in ("train", "test"):
        ds, builder = tfds_dataset(name, split, data_dir)
        label_feature = builder.info.features["label"]
        classes = list(getattr(label_feature, "names", None) or range(label_feature.num_classes))
        pairs = ds.map(lambda ex: (ex["image"], ex["label"]))
        labels = np.array([int(y) for _, y in pairs.as_numpy_iterator()], np.int64)
        out.append(LabelledSplit(f"tfds:{name}:{split}", None, labels, classes, pairs))
    return tuple(out)


def labelled_splits(dataset="stl10", data_dir=None, tfds_data_dir=None):
    if data_dir:
        return folder_splits(data_dir)
    return tfds_splits(dataset, tfds_data_dir)


def centre_crop(image, size):
    """Resize the shorter side to size / 0.875, then take the central size x size crop."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / 0.875) / tf.reduce_min(shape)
    new = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    resized = tf.image.resize(tf.cast(image, tf.float32), new, method="bilinear", antialias=True)
    return tf.image.resize_with_crop_or_pad(resized, size, size)


def split_keys(split):
    """(dataset of keys in the split's order, key -> uint8 RGB image)."""
    if split.dataset is not None:
        return split.dataset.map(lambda key, _: key), decode_image
    return tf.data.Dataset.from_tensor_slices(split.keys), read_and_decode


def split_images(split, image_size, batch_size=128):
    """Batches of centre-cropped float pixels [0, 255] in the split's order."""
    keys, decode = split_keys(split)
    return keys.map(lambda key: centre_crop(decode(key), image_size),
                      num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)


def sample_images(source, count, image_size, seed=0, skip=0):
    """`count` centre-cropped float images [count, S, S, 3] of a data source, after skipping the
    first `skip` of a seeded order (so two calls with different `skip` do not overlap)."""
    images = list(sample_dataset(source, count, image_size, seed, skip).as_numpy_iterator())
    return np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.float32)


def sample_dataset(source, count, image_size, seed=0, skip=0):
    """The images of `sample_images` as a tf.data.Dataset (unbatched, in order)."""
    if source.paths is not None:
        order = np.random.default_rng(seed).permutation(len(source.paths))[skip:skip + count]
        keys = tf.data.Dataset.from_tensor_slices(
            tf.constant([source.paths[i] for i in order], tf.string))
    else:
        keys = source.keys.shuffle(min(source.num_examples, 10_000), seed=seed,
                                   reshuffle_each_iteration=False).skip(skip).take(count)
    images = keys.map(lambda k: centre_crop(source.decode(k), image_size),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return images.ignore_errors()
