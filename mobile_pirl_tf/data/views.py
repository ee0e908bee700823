"""The two PIRL views of an image (PIRL Sec. 3, Eq. 5), one training element at a time.

- Image view v_I (PIRL Sec. 4, VISSL): random-resized crop to `image_size` (scale
  `view_min_scale`-1, the paper's 0.08; aspect 3/4-4/3), then the photometric augmentation
  (`augment.photometric_augment`).
- Transformed view v_I^t: the pretext transformation(s) of `--transforms`
  (`transforms.transformed_view`; the paper's jigsaw by default).

Images come in as uint8 (or float in [0, 255]); views come out float32 in [0, 255], the
backbones' input convention. A view depends only on (image, seed).
"""

import tensorflow as tf

from mobile_pirl_tf.core.config import TransformParams
from mobile_pirl_tf.data import augment, transforms


def image_view(image, image_size, seed, min_scale=0.08, photometric="one_of"):
    """v_I: random-resized crop (scale min_scale-1) + photometric augmentation, [S, S, 3] in
    [0, 255]."""
    s = augment.split(seed, 2)
    x = augment.random_resized_crop(augment.to_unit_float(image), image_size, (min_scale, 1.0),
                                    s[0])
    return augment.photometric_augment(x, s[1], photometric) * 255.0


def pirl_views(image, index, seed, image_size, names=("jigsaw",), params=TransformParams()):
    """One training element: {"image": v_I, "patches" or "transformed": v_I^t, "index": i}."""
    image_seed, transformed_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    key = "patches" if transforms.ends_in_patches(names) else "transformed"
    return {"image": image_view(image, image_size, image_seed, params.view_min_scale,
                                params.photometric),
            key: transforms.transformed_view(image, image_size, names, transformed_seed, params),
            "index": index}
