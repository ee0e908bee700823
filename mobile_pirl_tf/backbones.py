"""Backbones: keras.applications networks as globally pooled feature extractors.

Every backbone takes float32 RGB pixels in [0, 255] with any spatial size (the jigsaw
patches are smaller than the images) and returns the global-average-pooled last
feature map, as PIRL's heads expect. Each carries the input normalisation of its
keras.applications family, so an exported encoder takes raw pixels:

- ResNet-50: per-channel ImageNet mean / std (the torchvision / VISSL convention).
- MobileNetV2: x / 127.5 - 1.
- MobileNetV3: built-in preprocessing (the same scaling, inside the model).
- EfficientNet-B0: built-in Rescaling + Normalization.

Weights are always random (`weights=None`): nothing is downloaded.
"""

import keras

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

_ANY_SIZE = (None, None, 3)


def _resnet50(width):
    net = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=_ANY_SIZE, pooling="avg")
    normalize = keras.layers.Normalization(
        mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="imagenet_normalization")
    return _with_preprocessing(net, normalize)


def _mobilenetv2(width):
    net = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=_ANY_SIZE, pooling="avg", alpha=width)
    return _with_preprocessing(net, keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale"))


def _mobilenetv3small(width):
    return keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=_ANY_SIZE, pooling="avg", alpha=width,
        include_preprocessing=True)


def _mobilenetv3large(width):
    return keras.applications.MobileNetV3Large(
        include_top=False, weights=None, input_shape=_ANY_SIZE, pooling="avg", alpha=width,
        include_preprocessing=True)


def _efficientnetb0(width):
    return keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=_ANY_SIZE, pooling="avg")


def _with_preprocessing(net, preprocessing):
    inputs = keras.Input(_ANY_SIZE, name="pixels")
    return keras.Model(inputs, net(preprocessing(inputs)), name=net.name)


# name -> (builder(width), has a width multiplier)
BACKBONES = {
    "resnet50": (_resnet50, False),
    "mobilenetv2": (_mobilenetv2, True),
    "mobilenetv3small": (_mobilenetv3small, True),
    "mobilenetv3large": (_mobilenetv3large, True),
    "efficientnetb0": (_efficientnetb0, False),
}


def check_backbone(name, width=1.0):
    """Raises a one-line `UsageError` for an unknown backbone or a width it cannot take."""
    from mobile_pirl_tf import UsageError

    if name not in BACKBONES:
        raise UsageError(f"unknown --backbone={name!r}; valid values: {', '.join(sorted(BACKBONES))}")
    _, has_width = BACKBONES[name]
    if width <= 0:
        raise UsageError(f"--width must be positive, got {width}")
    if width != 1.0 and not has_width:
        with_width = sorted(n for n, (_, w) in BACKBONES.items() if w)
        raise UsageError(f"--backbone={name} has no width multiplier; use --width=1.0 or one of "
                         f"{', '.join(with_width)}")


def build_backbone(name, width=1.0):
    """Returns a `keras.Model` mapping [B, H, W, 3] pixels in [0, 255] to [B, d] features."""
    check_backbone(name, width)
    builder, _ = BACKBONES[name]
    return builder(width)


def build_encoder(backbone, image_size):
    """The deployable encoder: the backbone with a fixed [image_size, image_size, 3] input."""
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    return keras.Model(inputs, backbone(inputs), name="encoder")
