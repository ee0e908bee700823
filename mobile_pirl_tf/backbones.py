"""Backbones: mobile networks (and ResNet-50) as globally pooled feature extractors.

Every backbone takes float32 RGB pixels in [0, 255] with any spatial size (the jigsaw
patches are smaller than the images) and returns the global-average-pooled last
feature map, as PIRL's heads expect. Each carries the input normalisation of its
family, so an exported encoder takes raw pixels:

| name | source | normalisation | pooled feature dim (width 1) |
|---|---|---|---|
| resnet50 | keras.applications | ImageNet mean / std (torchvision, VISSL) | 2048 |
| mobilenetv2 | keras.applications | x / 127.5 - 1 | 1280 |
| mobilenetv3small | keras.applications | built in (x / 127.5 - 1) | 576 |
| mobilenetv3large | keras.applications | built in (x / 127.5 - 1) | 960 |
| efficientnetb0 | keras.applications | built in Rescaling + Normalization | 1280 |
| efficientnetlite0 | `efficientnet_lite` | (x - 127) / 128 | 1280 |
| mnasnet_a1, mnasnet_b1 | `mnasnet` | ImageNet mean / std | 1280 |

(keras.applications' MobileNetV3 puts its last 1x1 conv, 1024 / 1280 channels, in the
classifier top, so its pooled features are the 576 / 960 channels before it.)

Weights are always random (`weights=None`): nothing is downloaded.
"""

import keras

from mobile_pirl_tf import efficientnet_lite, mnasnet

IMAGENET_MEAN = mnasnet.IMAGENET_MEAN
IMAGENET_STD = mnasnet.IMAGENET_STD

ANY_SIZE = (None, None, 3)


def _application(constructor, preprocessing=None, has_width=True, **fixed):
    """A builder(width, input_shape, include_top, lib) for one keras.applications-style network.

    `constructor` is the name of a keras.applications class, or a builder function of this
    package. Without the top the network ends in global average pooling (the PIRL feature);
    with it, in the 1000-class classifier (for counts against the papers). `lib` is `keras`, or
    `tf_keras` for the quantization-aware-training twin (same layers, names and weights).
    """
    def build(width=1.0, input_shape=ANY_SIZE, include_top=False, lib=keras):
        kwargs = dict(fixed, include_top=include_top, input_shape=input_shape,
                      pooling=None if include_top else "avg")
        if has_width:
            kwargs["alpha"] = width
        if isinstance(constructor, str):
            net = getattr(lib.applications, constructor)(weights=None, **kwargs)
        else:
            net = constructor(lib=lib, **kwargs)
        if preprocessing is None:
            return net
        inputs = lib.Input(input_shape, name="pixels")
        return lib.Model(inputs, net(preprocessing(lib)(inputs)), name=net.name)
    return build


def _rescale_minus_one_to_one(lib):
    return lib.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")


# name -> (builder(width, input_shape, include_top, lib), has a width multiplier)
BACKBONES = {
    "resnet50": (_application("ResNet50", mnasnet.imagenet_normalization, has_width=False), False),
    "mobilenetv2": (_application("MobileNetV2", _rescale_minus_one_to_one), True),
    "mobilenetv3small": (_application("MobileNetV3Small", include_preprocessing=True), True),
    "mobilenetv3large": (_application("MobileNetV3Large", include_preprocessing=True), True),
    "efficientnetb0": (_application("EfficientNetB0", has_width=False), False),
    "efficientnetlite0": (_application(efficientnet_lite.EfficientNetLite0), True),
    "mnasnet_a1": (_application(mnasnet.MnasNetA1), True),
    "mnasnet_b1": (_application(mnasnet.MnasNetB1), True),
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


def build_backbone(name, width=1.0, input_shape=ANY_SIZE, include_top=False, lib=keras):
    """Returns a `keras.Model` mapping [B, H, W, 3] pixels in [0, 255] to [B, d] features
    (or, with `include_top`, to 1000 ImageNet-style class probabilities)."""
    check_backbone(name, width)
    builder, _ = BACKBONES[name]
    return builder(width, input_shape, include_top, lib)


def build_encoder(backbone, image_size):
    """The deployable encoder: the backbone with a fixed [image_size, image_size, 3] input."""
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    return keras.Model(inputs, backbone(inputs), name="encoder")
