"""Pretext transformations t for PIRL's transformed view v_I^t, and their compositions.

`--transforms=a+b+c` composes one to three transformations, applied in the written order.
Each is a TensorFlow op on one float image x in [0, 1] of shape [S, S, 3] (usable inside
tf.data, no py_function), reproducible under an explicit stateless seed:

- jigsaw: random-resized crop (scale 0.6-1) to 255/224 x S, 3x3 grid, one jittered patch per
  cell, shuffled, each patch with the PIRL photometric augmentation (`jigsaw_view`; PIRL
  Sec. 3.2).
- rotation: by k x 90 degrees, k uniform in {0, 1, 2, 3} (Gidaris et al. 2018; PIRL-Rotation).
- crop: random-resized crop, scale [crop_min_scale, 1], aspect 3/4-4/3, back to S x S
  (0.08: Inception, SimCLR).
- cutout: one square of side cutout_size x S, centre uniform (may overhang), filled with grey
  0.5 (0.5 of the side: DeVries & Taylor 2017).
- color: with p = 0.8 colour jitter (0.8s, 0.8s, 0.8s, hue 0.2s), then grey with p = 0.2
  (s = color_strength = 1: SimCLR App. A).
- sobel: Sobel gradient magnitude of the grey image, / (4 sqrt 2) into [0, 1], on 3 channels
  (deterministic).
- noise: additive Gaussian noise N(0, noise_std^2), clipped to [0, 1] (noise_std = 0.1).
- blur: with p = blur_p, Gaussian blur with sigma uniform in [0.1, blur_sigma_max] x S / 224,
  kernel 10% of S (odd) (p = 0.5, sigma 0.1-2.0: SimCLR).
- flip: horizontal flip with p = 0.5.

Composition rules:
- A view that does not contain `jigsaw` ends in an IMAGE: the image is centre-cropped to a square
  and resized to S x S (the "canvas"), then each transformation is applied in order. It goes
  through the shared backbone and a head shaped like f with its own weights (f_t).
- A view that contains `jigsaw` ends in PATCHES: transformations before it act on the canvas
  (at 255/224 x S), jigsaw cuts the result into 9 shuffled patches, and transformations after it
  act on every patch. After jigsaw, random parameters are drawn per patch (as the paper's
  per-patch colour augmentation), except `rotation`, which draws ONE angle for all 9 patches.
  The view goes through head g (shared backbone, per-patch projection, concatenation).
- So `jigsaw+rotation` is the paper's PIRL Jigsaw+Rotation (Sec. 5.2, Table 5): the transformation
  set is the product of the two (9! orders x 4 angles); rotating every patch by the same angle
  after shuffling is the same set as rotating the image before cutting it.
- A name appears at most once. Deterministic transforms (sobel) are the same under every seed.
"""

import collections
import math

import tensorflow as tf

from mobile_pirl_tf.core.config import (  # noqa: F401 - MAX_COMPOSED, TransformParams re-exported
    MAX_COMPOSED,
    TransformParams,
    transformed_kind,
)
from mobile_pirl_tf.core.config import parse_transforms as parse  # noqa: F401 - re-exported
from mobile_pirl_tf.data import augment

# Drawn once per view, not per patch, when they follow jigsaw.
PER_VIEW_AFTER_JIGSAW = ("rotation",)


def ends_in_patches(names):
    return transformed_kind(names) == "patches"


# --- jigsaw (PIRL Sec. 3.2) -------------------------------------------------------------------

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


def jigsaw_patches(crop, geometry, seed):
    """Cuts a [crop, crop, 3] image into the 9 shuffled jigsaw patches (no augmentation).

    One patch of `geometry.patch` pixels per 3x3 grid cell, at a random offset in
    [0, cell - patch] (the jitter), in a random order; upscaled to `geometry.patch_input`.
    Returns (patches [9, q, q, 3], permutation [9] int32): patches[k] is from cell permutation[k].
    """
    offset_seed, order_seed = augment.split(seed, 2)
    offsets = tf.random.stateless_uniform([NUM_PATCHES, 2], offset_seed, minval=0,
                                          maxval=geometry.cell - geometry.patch + 1,
                                          dtype=tf.int32)
    patches = []
    for k in range(NUM_PATCHES):
        row, col = divmod(k, GRID)
        top = row * geometry.cell + offsets[k, 0]
        left = col * geometry.cell + offsets[k, 1]
        patches.append(tf.slice(crop, tf.stack([top, left, 0]),
                                [geometry.patch, geometry.patch, 3]))
    permutation = tf.argsort(tf.random.stateless_uniform([NUM_PATCHES], order_seed))
    patches = tf.gather(tf.stack(patches), permutation)
    if geometry.patch_input != geometry.patch:
        patches = tf.image.resize(patches, [geometry.patch_input] * 2, method="bilinear")
    return patches, permutation


def jigsaw_view(image, image_size, seed, photometric="one_of"):
    """The jigsaw v_I^t: a random-resized crop (scale 0.6-1) to 255/224 of the image size, cut
    into 9 shuffled patches (`jigsaw_patches`), each with its own photometric augmentation.

    Returns (patches [9, q, q, 3] float32 in [0, 255], permutation [9] int32), where
    patches[k] was cut from grid cell permutation[k] (cells numbered row-major) and
    q = geometry.patch_input.
    """
    geom = jigsaw_geometry(image_size)
    s = augment.split(seed, 2 + NUM_PATCHES)
    crop = augment.random_resized_crop(augment.to_unit_float(image), geom.crop, (0.6, 1.0), s[0])
    patches, permutation = jigsaw_patches(crop, geom, s[1])
    patches = tf.stack([augment.photometric_augment(patches[k], s[2 + k], photometric)
                        for k in range(NUM_PATCHES)])
    return patches * 255.0, permutation


# --- the image transformations: x [S, S, 3] float32 in [0, 1] -> same shape, dtype and range ---


def rotation_quarter_turns(seed):
    """The drawn k (rotation by k x 90 degrees counter-clockwise), uniform in {0, 1, 2, 3}."""
    return tf.random.stateless_uniform([], seed, minval=0, maxval=4, dtype=tf.int32)


def rotation(x, seed, params):
    del params
    return tf.image.rot90(x, rotation_quarter_turns(seed))


def crop(x, seed, params):
    size = x.shape[0]
    out = augment.random_resized_crop(x, size, (params.crop_min_scale, 1.0), seed)
    return tf.ensure_shape(out, x.shape)


def cutout(x, seed, params):
    size = x.shape[0]
    side = max(1, int(round(params.cutout_size * size)))
    centre = tf.random.stateless_uniform([2], seed, minval=0, maxval=size, dtype=tf.int32)
    rows = tf.range(size)[:, None]
    cols = tf.range(size)[None, :]
    half = side // 2
    inside = ((rows >= centre[0] - half) & (rows < centre[0] - half + side)
              & (cols >= centre[1] - half) & (cols < centre[1] - half + side))
    return tf.where(inside[:, :, None], tf.constant(0.5, x.dtype), x)


def color(x, seed, params):
    s = params.color_strength
    jitter_seed, apply_seed, grey_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    jittered = augment.color_jitter(x, jitter_seed, 0.8 * s, 0.8 * s, 0.8 * s, min(0.5, 0.2 * s))
    x = tf.where(augment.uniform(apply_seed) < 0.8, jittered, x)
    return augment.random_grayscale(x, grey_seed, p=0.2)


SOBEL_MAX = 4.0 * math.sqrt(2.0)  # the largest gradient magnitude of an image in [0, 1]


def sobel(x, seed=None, params=None):
    del seed, params
    grey = tf.image.rgb_to_grayscale(x)[None]                # [1, S, S, 1]
    edges = tf.image.sobel_edges(grey)[0, :, :, 0, :]        # [S, S, 2]: dy, dx (reflect pad)
    magnitude = tf.sqrt(tf.reduce_sum(tf.square(edges), -1, keepdims=True)) / SOBEL_MAX
    return tf.tile(tf.clip_by_value(magnitude, 0.0, 1.0), [1, 1, 3])


def noise(x, seed, params):
    return tf.clip_by_value(x + tf.random.stateless_normal(tf.shape(x), seed) * params.noise_std,
                            0.0, 1.0)


def gaussian_kernel(sigma, size):
    """A normalised 1-D Gaussian of odd length `size` (static) and std `sigma` (a tensor)."""
    r = tf.range(size, dtype=tf.float32) - (size - 1) / 2
    k = tf.exp(-tf.square(r) / (2.0 * tf.square(sigma)))
    return k / tf.reduce_sum(k)


def blur(x, seed, params):
    size = x.shape[0]
    apply_seed, sigma_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    sigma = augment.uniform(sigma_seed, 0.1, params.blur_sigma_max) * size / 224.0
    length = max(3, int(size * 0.1) // 2 * 2 + 1)
    k = gaussian_kernel(tf.maximum(sigma, 1e-3), length)
    kh = tf.tile(tf.reshape(k, [1, length, 1, 1]), [1, 1, 3, 1])
    kv = tf.tile(tf.reshape(k, [length, 1, 1, 1]), [1, 1, 3, 1])
    padded = tf.pad(x[None], [[0, 0], [length // 2] * 2, [length // 2] * 2, [0, 0]], "REFLECT")
    blurred = tf.nn.depthwise_conv2d(tf.nn.depthwise_conv2d(padded, kh, [1] * 4, "VALID"), kv,
                                     [1] * 4, "VALID")[0]
    return tf.where(augment.uniform(apply_seed) < params.blur_p, blurred, x)


def flip(x, seed, params):
    del params
    return tf.image.stateless_random_flip_left_right(x, seed)


IMAGE_TRANSFORMS = {"rotation": rotation, "crop": crop, "cutout": cutout, "color": color,
                    "sobel": sobel, "noise": noise, "blur": blur, "flip": flip}


def apply(name, x, seed, params=TransformParams()):
    """One named image transformation (not jigsaw) of x [S, S, 3] in [0, 1]."""
    return IMAGE_TRANSFORMS[name](x, seed, params)


def canvas(image, size):
    """The untransformed starting point: centre square crop of the image, resized to size x size,
    float32 in [0, 1]."""
    x = augment.to_unit_float(image)
    shape = tf.shape(x)
    side = tf.minimum(shape[0], shape[1])
    x = tf.image.crop_to_bounding_box(x, (shape[0] - side) // 2, (shape[1] - side) // 2, side, side)
    return tf.image.resize(x, [size, size], method="bilinear")


def transformed_view(image, image_size, names, seed, params=TransformParams()):
    """v_I^t for the composition `names` (module docstring), float32 in [0, 255]:
    [9, q, q, 3] patches when it contains jigsaw, else an [S, S, 3] image."""
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, len(names)))
    if not ends_in_patches(names):
        x = canvas(image, image_size)
        for name, s in zip(names, seeds):
            x = apply(name, x, s, params)
        return x * 255.0

    at = names.index("jigsaw")
    before, after = names[:at], names[at + 1:]
    geometry = jigsaw_geometry(image_size)
    if before:
        x = canvas(image, geometry.crop)
        for name, s in zip(before, seeds[:at]):
            x = apply(name, x, s, params)
        image = x * 255.0
    patches, _ = jigsaw_view(image, image_size, seeds[at], params.photometric)
    patches = patches / 255.0
    for name, s in zip(after, seeds[at + 1:]):
        if name in PER_VIEW_AFTER_JIGSAW:
            per_patch = [s] * NUM_PATCHES
        else:
            per_patch = tf.unstack(tf.random.experimental.stateless_split(s, NUM_PATCHES))
        patches = tf.stack([apply(name, patches[k], per_patch[k], params)
                            for k in range(NUM_PATCHES)])
    return patches * 255.0
