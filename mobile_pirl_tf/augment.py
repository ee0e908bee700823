"""Seeded image augmentation ops, usable inside `tf.data` (TF ops only, no py_function).

Every random choice uses stateless ops driven by an explicit `seed` (a [2] int tensor), so an
augmented image depends only on (image, seed). Images are float32 [H, W, 3] in [0, 1].

- `random_resized_crop`: the Inception crop (area `scale`, aspect 3/4-4/3), resized.
- `photometric_augment`: PIRL's (VISSL's) photometric augmentation, in VISSL's order: colour
  jitter (brightness, contrast, saturation 0.4, hue 0.2), with p=0.66 one of posterize /
  sharpness / solarize / autocontrast, greyscale with p=0.2, horizontal flip with p=0.5.
"""

import tensorflow as tf


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
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(x[None], kernel, [1, 1, 1, 1], "SAME")[0]
    return tf.clip_by_value(smooth + factor * (x - smooth), 0.0, 1.0)


def random_photometric(x, seed, p=0.66):
    """With probability p, one of posterize / sharpness / solarize / autocontrast."""
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


def photometric_augment(x, seed):
    """The PIRL photometric augmentation of one image x in [0, 1] (module docstring)."""
    s = split(seed, 4)
    x = color_jitter(x, s[0])
    x = random_photometric(x, s[1])
    x = random_grayscale(x, s[2])
    return tf.image.stateless_random_flip_left_right(x, s[3])
