"""The two PIRL views of an image, as TensorFlow ops usable inside `tf.data` (no py_function).

Every random choice uses stateless ops driven by an explicit `seed` (a [2] int tensor), so a
view depends only on (image, seed): the pipeline derives one seed per example from
(--seed, epoch, position) and the views are reproducible whatever the parallelism.

- Image view v_I (PIRL Sec. 4, VISSL): random-resized crop to `image_size`
  (scale 0.08-1, aspect 3/4-4/3), then the photometric augmentation.
- Jigsaw view v_I^t (PIRL Sec. 3.2): a separate random-resized crop (scale 0.6-1) to
  `crop = 255/224 * image_size`, a 3x3 grid of `cell = crop // 3` cells, one
  `patch = 64/85 * cell` square per cell at a random offset (the jitter), the 9 patches shuffled
  by a random permutation, each patch with its own photometric augmentation. Patches smaller
  than 32 px (image_size < 112) are upscaled to 32 px, the keras.applications minimum.
- Photometric augmentation (VISSL order): colour jitter (brightness, contrast, saturation 0.4,
  hue 0.2), with p=0.66 one of posterize / sharpness / solarize / autocontrast, greyscale with
  p=0.2, horizontal flip with p=0.5.

Images come in as uint8 (or float in [0, 255]); views come out float32 in [0, 255], the
backbones' input convention.
"""

import collections

import tensorflow as tf

JigsawGeometry = collections.namedtuple("JigsawGeometry", ["crop", "cell", "patch", "patch_input"])

NUM_PATCHES = 9
GRID = 3
# keras.applications networks need inputs of at least 32 x 32 (smaller ones shrink to nothing
# in graph mode); patches cut smaller than this (image_size < 112) are upscaled to it.
MIN_BACKBONE_INPUT = 32


def jigsaw_geometry(image_size):
    """Crop, cell and patch sizes, scaled from the paper's 224 / 255 / 85 / 64, and the size the
    patches are fed to the backbone at (the patch size, or 32 when the patch is smaller)."""
    crop = int(round(image_size * 255 / 224))
    cell = crop // GRID
    patch = int(round(cell * 64 / 85))
    return JigsawGeometry(crop, cell, patch, max(patch, MIN_BACKBONE_INPUT))


def _split(seed, n):
    return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _uniform(seed, minval, maxval):
    return tf.random.stateless_uniform([], seed, minval=minval, maxval=maxval)


def random_resized_crop(image, size, scale, seed, ratio=(3 / 4, 4 / 3)):
    """Inception-style crop of `scale` of the area and `ratio` aspect, resized to size x size.

    `image` is float32 [H, W, 3]. Falls back to the whole image when 100 draws fail, and
    upscales crops smaller than `size`.
    """
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=0.0, aspect_ratio_range=ratio, area_range=scale, max_attempts=100,
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, extent)
    return tf.image.resize(crop, [size, size], method="bilinear")


def color_jitter(x, seed, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2):
    """torchvision-style ColorJitter on x in [0, 1]; brightness is multiplicative."""
    s = _split(seed, 4)
    x = x * _uniform(s[0], 1 - brightness, 1 + brightness)
    x = tf.image.stateless_random_contrast(x, 1 - contrast, 1 + contrast, s[1])
    x = tf.image.stateless_random_saturation(tf.clip_by_value(x, 0, 1), 1 - saturation,
                                             1 + saturation, s[2])
    x = tf.image.stateless_random_hue(x, hue, s[3])
    return tf.clip_by_value(x, 0.0, 1.0)


def posterize(x, bits=4):
    levels = 2.0 ** bits
    return tf.floor(x * 255.0 / (256.0 / levels)) * (256.0 / levels) / 255.0


def solarize(x, threshold=0.5):
    return tf.where(x < threshold, x, 1.0 - x)


def autocontrast(x):
    lo = tf.reduce_min(x, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(x, axis=[0, 1], keepdims=True)
    return tf.where(hi > lo, (x - lo) / tf.maximum(hi - lo, 1e-6), x)


def sharpness(x, factor):
    """PIL ImageEnhance.Sharpness: blend with PIL's SMOOTH-filtered image (kernel 1 1 1/1 5 1/1 1 1)."""
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], "SAME")[0]
    return tf.clip_by_value(smooth + factor * (x - smooth), 0.0, 1.0)


def random_photometric(x, seed, p=0.66):
    """With probability p, one of posterize / sharpness / solarize / autocontrast (VISSL)."""
    s = _split(seed, 3)
    choice = tf.random.stateless_uniform([], s[0], minval=0, maxval=4, dtype=tf.int32)
    factor = _uniform(s[1], 0.1, 1.9)
    enhanced = tf.switch_case(choice, [
        lambda: posterize(x), lambda: sharpness(x, factor), lambda: solarize(x),
        lambda: autocontrast(x)])
    return tf.where(_uniform(s[2], 0.0, 1.0) < p, enhanced, x)


def random_grayscale(x, seed, p=0.2):
    grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(x))
    return tf.where(_uniform(seed, 0.0, 1.0) < p, grey, x)


def photometric_augment(x, seed):
    """The VISSL PIRL photometric augmentation of one image x in [0, 1]."""
    s = _split(seed, 4)
    x = color_jitter(x, s[0])
    x = random_photometric(x, s[1])
    x = random_grayscale(x, s[2])
    return tf.image.stateless_random_flip_left_right(x, s[3])


def to_unit_float(image):
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        return tf.image.convert_image_dtype(image, tf.float32)
    return tf.cast(image, tf.float32) / 255.0


def image_view(image, image_size, seed, min_scale=0.08):
    """v_I: random-resized crop (scale min_scale-1; the paper's 0.08) + photometric augmentation,
    [S, S, 3] in [0, 255]."""
    s = _split(seed, 2)
    x = random_resized_crop(to_unit_float(image), image_size, (min_scale, 1.0), s[0])
    return photometric_augment(x, s[1]) * 255.0


def jigsaw_patches(crop, geometry, seed):
    """Cuts a [crop, crop, 3] image into the 9 shuffled jigsaw patches (no augmentation).

    One patch of `geometry.patch` pixels per 3x3 grid cell, at a random offset in
    [0, cell - patch] (the jitter), in a random order; upscaled to `geometry.patch_input`.
    Returns (patches [9, q, q, 3], permutation [9] int32): patches[k] is from cell permutation[k].
    """
    offset_seed, order_seed = _split(seed, 2)
    offsets = tf.random.stateless_uniform([NUM_PATCHES, 2], offset_seed, minval=0,
                                          maxval=geometry.cell - geometry.patch + 1, dtype=tf.int32)
    patches = []
    for k in range(NUM_PATCHES):
        row, col = divmod(k, GRID)
        top = row * geometry.cell + offsets[k, 0]
        left = col * geometry.cell + offsets[k, 1]
        patches.append(tf.slice(crop, tf.stack([top, left, 0]), [geometry.patch, geometry.patch, 3]))
    permutation = tf.argsort(tf.random.stateless_uniform([NUM_PATCHES], order_seed))
    patches = tf.gather(tf.stack(patches), permutation)
    if geometry.patch_input != geometry.patch:
        patches = tf.image.resize(patches, [geometry.patch_input] * 2, method="bilinear")
    return patches, permutation


def jigsaw_view(image, image_size, seed):
    """v_I^t for the jigsaw pretext.

    Returns (patches [9, q, q, 3] float32 in [0, 255], permutation [9] int32), where
    patches[k] was cut from grid cell permutation[k] (cells numbered row-major) and
    q = geometry.patch_input.
    """
    geom = jigsaw_geometry(image_size)
    s = _split(seed, 2 + NUM_PATCHES)
    crop = random_resized_crop(to_unit_float(image), geom.crop, (0.6, 1.0), s[0])
    patches, permutation = jigsaw_patches(crop, geom, s[1])
    patches = tf.stack([photometric_augment(patches[k], s[2 + k]) for k in range(NUM_PATCHES)])
    return patches * 255.0, permutation
