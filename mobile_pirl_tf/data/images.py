"""Image files: which files of a folder are images the pipeline can use, and decoding.

`list_image_files` scans a folder (any nesting) and keeps the files that are images; the
others are counted by reason. `decode_image` turns encoded bytes into uint8 RGB, the one
decoder every pipeline uses; `centre_crop` is the view the encoder sees at inference.
"""

import os

import tensorflow as tf

from mobile_pirl_tf.core.errors import UsageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


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


def centre_crop(image, size):
    """Resize the shorter side to size / 0.875, then take the central size x size crop."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / 0.875) / tf.reduce_min(shape)
    new = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    resized = tf.image.resize(tf.cast(image, tf.float32), new, method="bilinear", antialias=True)
    return tf.image.resize_with_crop_or_pad(resized, size, size)
