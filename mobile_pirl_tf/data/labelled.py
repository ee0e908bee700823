"""Labelled data for evaluation: the train and test halves of a labelled data set.

A `LabelledSplit` is a folder laid out as train/<class>/... and test/<class>/..., or a TFDS data
set with train and test splits. Class indices follow the sorted folder names (TFDS: its labels).
`split_images` gives its centre crops in order; `balanced_subset` and `per_class_subset` draw
class-balanced, seeded subsets (the same files for every encoder compared).
"""

import dataclasses
import logging
import os

import numpy as np
import tensorflow as tf

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.data import images, sources


@dataclasses.dataclass
class LabelledSplit:
    name: str                 # identifies the data for the cache
    keys: list                # file paths (folder) or None (TFDS: images come from `dataset`)
    labels: np.ndarray
    classes: list
    dataset: object = None    # TFDS: a tf.data.Dataset of (encoded image, label)


# The labelled split a folder holds for testing: test/, or the val/ of the official Imagenette
# archive and of ImageNet-style layouts (the first present is used).
TEST_FOLDERS = ("test", "val", "validation")


def _class_folders(root):
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                  and not d.startswith("."))


def test_folder(root):
    """The name of root's test split folder (`TEST_FOLDERS`), or None."""
    return next((n for n in TEST_FOLDERS if os.path.isdir(os.path.join(root, n))), None)


def _scan_classes(folder, classes):
    """{class: Scan} of each class folder under `folder` that exists."""
    return {name: images.list_image_files(os.path.join(folder, name)) for name in classes
            if os.path.isdir(os.path.join(folder, name))}


def folder_splits(root):
    """(train, test) LabelledSplits from root/train/<class>/... and root/test/<class>/...
    (test/ may be val/ or validation/). Every file goes through the pipeline's image scan
    (`images.list_image_files`); a class folder with no usable training image is not a class
    (warned), and skipped files are named in one warning."""
    test_name = test_folder(root) if os.path.isdir(root) else None
    missing = [f"{n}/" for n, ok in (("train", os.path.isdir(os.path.join(root, "train"))),
                                     ("test", test_name is not None)) if not ok]
    if missing:
        raise UsageError(f"--data_dir={root} has no {' or '.join(missing)} folder; labelled data "
                         "must be laid out as train/<class>/... and test/<class>/... (val/ is "
                         "accepted for test/)")
    train_scans = _scan_classes(os.path.join(root, "train"), _class_folders(
        os.path.join(root, "train")))
    empty = sorted(n for n, scan in train_scans.items() if not scan.files)
    classes = [n for n in sorted(train_scans) if n not in empty]
    if empty:
        logging.warning("%s/train: %d class folder(s) without a usable image are not classes: "
                        "%s", root, len(empty), ", ".join(empty[:5]))
    if not classes:
        raise UsageError(f"{root}/train has no class folder with a usable image")
    test_dir = os.path.join(root, test_name)
    test_scans = _scan_classes(test_dir, _class_folders(test_dir))
    unknown = sorted(n for n, scan in test_scans.items() if scan.files and n not in classes)
    if unknown:
        raise UsageError(f"{test_dir} has classes that train/ lacks: {', '.join(unknown[:5])}; "
                         "every test class needs training examples")
    splits = []
    for split, scans in (("train", train_scans), ("test", test_scans)):
        keys, labels, skipped = [], [], []
        for label, name in enumerate(classes):
            if name in scans:
                keys += scans[name].files
                labels += [label] * len(scans[name].files)
                skipped += scans[name].skipped
        if skipped:
            logging.warning("%s/%s: using %d images; %s", root, split, len(keys),
                            images.Scan(keys, skipped).summary())
        if not keys:
            raise UsageError(f"{root}/{split} holds no image TensorFlow can read")
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


def _tfds_split(name, split, data_dir, manual_dir):
    ds, builder = sources.tfds_dataset(name, split, data_dir, manual_dir)
    label_feature = builder.info.features["label"]
    classes = list(getattr(label_feature, "names", None) or range(label_feature.num_classes))
    pairs = ds.map(lambda ex: (ex["image"], ex["label"]))
    labels = np.array([int(y) for _, y in pairs.as_numpy_iterator()], np.int64)
    return LabelledSplit(f"tfds:{name}:{split}", None, labels, classes, pairs), builder


def tfds_splits(name, data_dir=None, manual_dir=None):
    """(train, test) LabelledSplits of a TFDS data set (prepared first when it is not); its
    "test" split, else "validation" (imagenet2012's labelled held-out split)."""
    train, builder = _tfds_split(name, "train", data_dir, manual_dir)
    known = builder.info.splits
    test_split = "test" if "test" in known or not known else "validation"
    return train, _tfds_split(name, test_split, data_dir, manual_dir)[0]


def labelled_splits(dataset="stl10", data_dir=None, tfds_data_dir=None, tfds_manual_dir=None):
    """`folder_splits` of data_dir when given, else `tfds_splits` of the TFDS `dataset`."""
    if data_dir:
        return folder_splits(data_dir)
    return tfds_splits(dataset, tfds_data_dir, tfds_manual_dir)


def split_keys(split):
    """(dataset of keys in the split's order, key -> uint8 RGB image)."""
    if split.dataset is not None:
        return split.dataset.map(lambda key, _: key), images.decode_image
    return tf.data.Dataset.from_tensor_slices(split.keys), images.read_and_decode


def split_images(split, image_size, batch_size=128):
    """Batches of centre-cropped float pixels [0, 255] in the split's order."""
    keys, decode = split_keys(split)
    return keys.map(lambda key: images.centre_crop(decode(key), image_size),
                      num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)


def seeded_crops(split, image_size, count, seed=0, batch_size=128):
    """Batches of the centre crops of `count` examples of a split drawn under `seed` (all of
    them when it has fewer): the images batch-norm statistics are re-estimated on."""
    order = np.random.default_rng(seed).permutation(len(split.labels))[:count]
    if split.keys is not None:
        subset = dataclasses.replace(split, keys=[split.keys[i] for i in order], dataset=None)
    else:
        subset = dataclasses.replace(split, dataset=split.dataset.take(count))
    return split_images(subset, image_size, batch_size)
