"""Image files: which files of a folder are images the pipeline can use, and decoding.

`list_image_files` scans a folder (any nesting) and keeps the files that are images; the
others are counted by reason. `decode_image` turns encoded bytes into uint8 RGB, the one
decoder every pipeline uses; `centre_crop` is the view the encoder sees at inference.
"""

import collections
import dataclasses
import os
import stat
from typing import List, Tuple

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


# What TensorFlow's decoder (`decode_image`, the one the pipelines use) reads, by the format
# Pillow detects in the content (not the extension): checked against the decoder itself, file
# by file, in tests/test_data.py.
TF_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")


def _bmp_header(path):
    """(bits per pixel, compression) of a BMP file's info header."""
    with open(path, "rb") as f:
        header = f.read(34)
    return int.from_bytes(header[28:30], "little"), int.from_bytes(header[30:34], "little")


def unusable_reason(path):
    """Why the file cannot train, or None when it can: not a regular file (a FIFO would block,
    a device or socket has no image), not an image Pillow can open and verify, content that
    TensorFlow's decoder does not read (TIFF, ICO, PPM, ... under an image extension; 1-bit,
    4-bit or compressed BMP; animated WebP), or a JPEG without its end-of-image marker in the
    last 4 KB (Pillow's verify passes a truncated JPEG, which then fails to decode mid-epoch;
    in entropy-coded data 0xFF is stuffed as FF00, so FFD9 is only ever the marker)."""
    from PIL import Image

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "not a regular file"
        with Image.open(path) as im:
            kind, frames = im.format, getattr(im, "n_frames", 1)
            im.verify()
    except Exception:  # noqa: BLE001 - any failure means "not an image we can use"
        return "corrupt, truncated or not an image"
    if kind not in TF_FORMATS:
        return f"{kind} content, which TensorFlow's decoder does not read"
    if kind == "WEBP" and frames > 1:
        return "animated WebP, which TensorFlow's decoder does not read"
    if kind == "BMP":
        bits, compression = _bmp_header(path)
        if bits not in (8, 24, 32) or compression not in (0, 3):
            return f"{bits}-bit or compressed BMP, which TensorFlow's decoder does not read"
    if kind == "JPEG":
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            if b"\xff\xd9" not in f.read():
                return "truncated JPEG"
    return None


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


def _printable(name):
    """A file name as text that any stream can carry (bytes that are not UTF-8 as \\xNN)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _utf8(name):
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # a name that is not UTF-8 (surrogate-escaped by os.walk)
        return False


@dataclasses.dataclass
class Scan:
    """What a folder holds: the image files that train (sorted), and the skipped ones with
    their reason ([(path, reason)]); `repeated_dirs` counts directories reached twice through
    links (their files are listed once)."""
    files: List[str]
    skipped: List[Tuple[str, str]]
    repeated_dirs: int = 0

    def summary(self, shown=3):
        """"4 skipped: 2 not images, 1 corrupt, ... (a.bmp: 1-bit BMP ..., ...)"."""
        counts = collections.Counter(reason for _, reason in self.skipped)
        named = "; ".join(f"{_printable(os.path.basename(p))}: {r}"
                          for p, r in self.skipped[:shown])
        more = f"; and {len(self.skipped) - shown} more" if len(self.skipped) > shown else ""
        text = ", ".join(f"{n} {r}" for r, n in counts.most_common())
        dirs = (f"; {self.repeated_dirs} directories reached twice through links listed once"
                if self.repeated_dirs else "")
        if not self.skipped:
            return f"no other file{dirs}"
        return f"skipped {len(self.skipped)} files ({text}) [{named}{more}]{dirs}"


def list_image_files(root):
    """The `Scan` of `root` (any nesting): every file whose name has an image extension and
    whose content TensorFlow's decoder reads (`unusable_reason`) trains; the others are
    skipped with their reason. Names that are not UTF-8 (TensorFlow's string tensors cannot
    hold them) are skipped; hidden files are ignored; directory links are followed, but no
    directory is visited twice (a link loop would repeat images, so that an image's own copies
    became its negatives)."""
    if not os.path.isdir(root):
        raise UsageError(f"--data_dir={root} is not a directory")
    files, skipped, repeated = [], [], 0
    visited = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        visited.add(os.path.realpath(dirpath))
        kept = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            if real in visited:
                repeated += 1
            else:
                visited.add(real)
                kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            if not _utf8(path):
                skipped.append((path, "name not UTF-8"))
            elif not name.lower().endswith(IMAGE_EXTENSIONS):
                skipped.append((path, "not an image (extension)"))
            else:
                reason = unusable_reason(path)
                (files.append(path) if reason is None else skipped.append((path, reason)))
    return Scan(files, skipped, repeated)


def centre_crop(image, size):
    """Resize the shorter side to size / 0.875, then take the central size x size crop."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / 0.875) / tf.reduce_min(shape)
    new = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    resized = tf.image.resize(tf.cast(image, tf.float32), new, method="bilinear", antialias=True)
    return tf.image.resize_with_crop_or_pad(resized, size, size)
