"""Seeded image augmentation ops, usable inside `tf.data` (TF ops only, no py_function).

Every random choice uses stateless ops driven by an explicit `seed` (a [2] int tensor), so an
augmented image depends only on (image, seed). Images are float32 [H, W, 3] in [0, 1].

- `random_resized_crop`: the Inception crop (area `scale`, aspect 3/4-4/3), resized.
- `photometric_augment`: PIRL's photometric augmentation, in VISSL's order: colour jitter
  (brightness, contrast, saturation 0.4, hue 0.2), then the random photometric step, greyscale
  with p=0.2, horizontal flip with p=0.5. The random photometric step is one of
  `PHOTOMETRIC_KINDS`:
  - "vissl" (VISSL's `ImgPilRandomPhotometric`, what PIRL trained with): with p=0.66, ALL FOUR
    of posterize (4-8 bits), sharpness (factor 0.1-1.9), solarize (threshold 0-256) and
    autocontrast, in that order, each with its own random strength, on the 8-bit image
    (`vissl_photometric` reproduces PIL's ImageOps / ImageEnhance exactly);
  - "one_of" (the default: it learns better at equal epochs, RESULTS.md): with p=0.66, ONE of
    posterize (4 bits), sharpness (0.1-1.9), solarize (0.5) or autocontrast: a weaker step.
"""

import tensorflow as tf

from mobile_pirl_tf.core.config import PHOTOMETRIC_KINDS

SMOOTH_KERNEL = [[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]  # PIL's ImageFilter.SMOOTH


def _smooth_kernel():
    """PIL's SMOOTH kernel / 13 as a depthwise filter over 3 channels [3, 3, 3, 1]."""
    return tf.tile(tf.constant(SMOOTH_KERNEL)[:, :, None, None] / 13.0, [1, 1, 3, 1])


def split(seed, n):
    """`n` independent [2] seeds from one."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def uniform(seed, minval=0.0, maxval=1.0):
    """One float drawn uniformly from [minval, maxval)."""
    return tf.random.stateless_uniform([], seed, minval=minval, maxval=maxval)


def to_unit_float(image):
    """uint8 [0, 255] or float [0, 255] pixels -> float32 [0, 1]."""
    image = tf.convert_to_tensor(image)
    if image.dtype == tf.uint8:
        return tf.image.convert_image_dtype(image, tf.float32)
    return tf.cast(image, tf.float32) / 255.0


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
    s = split(seed, 4)
    x = x * uniform(s[0], 1 - brightness, 1 + brightness)
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
    """PIL ImageEnhance.Sharpness: blend with PIL's SMOOTH-filtered image (kernel 1 1 1 / 1 5 1 /
    1 1 1, normalised)."""
    smooth = tf.nn.depthwise_conv2d(x[None], _smooth_kernel(), [1, 1, 1, 1], "SAME")[0]
    return tf.clip_by_value(smooth + factor * (x - smooth), 0.0, 1.0)


def _pil_smooth(q):
    """PIL's SMOOTH filter on 8-bit levels q [H, W, 3]: the 3x3 kernel / 13, rounded, with the
    one-pixel border left as it is (as PIL's 3x3 filters leave it)."""
    inner = tf.round(tf.nn.depthwise_conv2d(q[None], _smooth_kernel(), [1, 1, 1, 1], "VALID")[0])
    shape = tf.shape(q)
    inside = tf.pad(tf.ones([shape[0] - 2, shape[1] - 2, 3], tf.bool), [[1, 1], [1, 1], [0, 0]])
    return tf.where(inside, tf.pad(inner, [[1, 1], [1, 1], [0, 0]]), q)


def vissl_photometric(x, bits, factor, threshold):
    """VISSL's photometric chain on x in [0, 1] (taken as the 8-bit image it is in VISSL):
    PIL `ImageOps.posterize(bits)`, `ImageEnhance.Sharpness(factor)`, `ImageOps.solarize(
    threshold)`, `ImageOps.autocontrast()`, with PIL's integer arithmetic. Returns [0, 1]."""
    q = tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0)
    step = tf.pow(2.0, 8.0 - tf.cast(bits, tf.float32))
    q = tf.floor(q / step) * step                                     # keep the top `bits` bits
    smooth = _pil_smooth(q)                                           # Image.blend truncates
    q = tf.clip_by_value(tf.floor(smooth + tf.cast(factor, tf.float32) * (q - smooth)), 0, 255)
    q = tf.where(q >= tf.cast(threshold, tf.float32), 255.0 - q, q)
    # autocontrast: per channel, [lo, hi] -> [0, 255], int() of the scaled value (float64 as in
    # PIL's Python, so that exact integers do not round down).
    q64 = tf.cast(q, tf.float64)
    lo = tf.reduce_min(q64, axis=[0, 1], keepdims=True)
    hi = tf.reduce_max(q64, axis=[0, 1], keepdims=True)
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    stretched = tf.clip_by_value(tf.floor(q64 * scale + (-lo * scale)), 0.0, 255.0)
    return tf.cast(tf.where(hi > lo, stretched, q64), tf.float32) / 255.0


def vissl_photometric_parameters(seed):
    """(bits in {4..8}, sharpness factor in [0.1, 1.9), solarize threshold in {0..256}), drawn as
    VISSL's RandomPosterize / RandomSharpness / RandomSolarizeTransform draw them."""
    s = split(seed, 3)
    bits = tf.random.stateless_uniform([], s[0], minval=4, maxval=9, dtype=tf.int32)
    threshold = tf.random.stateless_uniform([], s[2], minval=0, maxval=257, dtype=tf.int32)
    return bits, uniform(s[1], 0.1, 1.9), threshold


def random_photometric(x, seed, p=0.66, kind="one_of"):
    """With probability p, the photometric step of `kind` (module docstring)."""
    if kind == "vissl":
        apply_seed, parameter_seed = split(seed, 2)
        parameters = vissl_photometric_parameters(parameter_seed)
        # tf.cond: the four ops are computed only for the images they apply to.
        return tf.cond(uniform(apply_seed) < p, lambda: vissl_photometric(x, *parameters),
                       lambda: x)
    if kind != "one_of":
        raise ValueError(f"photometric kind must be one of {PHOTOMETRIC_KINDS}, got {kind!r}")
    s = split(seed, 3)
    choice = tf.random.stateless_uniform([], s[0], minval=0, maxval=4, dtype=tf.int32)
    factor = uniform(s[1], 0.1, 1.9)
    enhanced = tf.switch_case(choice, [
        lambda: posterize(x), lambda: sharpness(x, factor), lambda: solarize(x),
        lambda: autocontrast(x)])
    return tf.where(uniform(s[2]) < p, enhanced, x)


def random_grayscale(x, seed, p=0.2):
    grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(x))
    return tf.where(uniform(seed) < p, grey, x)


def photometric_augment(x, seed, kind="one_of"):
    """The PIRL photometric augmentation of one image x in [0, 1] (module docstring)."""
    s = split(seed, 4)
    x = color_jitter(x, s[0])
    x = random_photometric(x, s[1], kind=kind)
    x = random_grayscale(x, s[2])
    return tf.image.stateless_random_flip_left_right(x, s[3])
