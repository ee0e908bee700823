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

import os

import keras

from mobile_pirl_tf.core import config
from mobile_pirl_tf.core.config import check_backbone  # noqa: F401 - re-exported
from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.models import efficientnet_lite, mnasnet

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


# name -> builder(width, input_shape, include_top, lib); which take a width multiplier is
# `config.BACKBONE_WIDTHS` (checked without building anything).
BACKBONES = {
    "resnet50": _application("ResNet50", mnasnet.imagenet_normalization, has_width=False),
    "mobilenetv2": _application("MobileNetV2", _rescale_minus_one_to_one),
    "mobilenetv3small": _application("MobileNetV3Small", include_preprocessing=True),
    "mobilenetv3large": _application("MobileNetV3Large", include_preprocessing=True),
    "efficientnetb0": _application("EfficientNetB0", has_width=False),
    "efficientnetlite0": _application(efficientnet_lite.EfficientNetLite0),
    "mnasnet_a1": _application(mnasnet.MnasNetA1),
    "mnasnet_b1": _application(mnasnet.MnasNetB1),
}
assert set(BACKBONES) == set(config.BACKBONE_WIDTHS), "config.BACKBONE_WIDTHS is out of date"


def build_backbone(name, width=1.0, input_shape=ANY_SIZE, include_top=False, lib=keras):
    """Returns a `keras.Model` mapping [B, H, W, 3] pixels in [0, 255] to [B, d] features
    (or, with `include_top`, to 1000 ImageNet-style class probabilities)."""
    check_backbone(name, width)
    return BACKBONES[name](width, input_shape, include_top, lib)


def build_encoder(backbone, image_size):
    """The deployable encoder: the backbone with a fixed [image_size, image_size, 3] input."""
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    return keras.Model(inputs, backbone(inputs), name="encoder")


def encoder_image_size(encoder):
    """The side of an encoder's fixed square input."""
    shape = encoder.input_shape
    if shape[1] is None or shape[1] != shape[2]:
        raise UsageError(f"the encoder's input {shape} is not a fixed square; export it with "
                         "backbones.build_encoder(backbone, image_size)")
    return int(shape[1])


def load_encoder(model_dir=None, encoder_path=None):
    """(encoder, path) of `encoder_path`, or of MODEL_DIR/encoder.keras."""
    path = encoder_path or os.path.join(model_dir or "", "encoder.keras")
    if not os.path.isfile(path):
        where = f"--encoder={encoder_path}" if encoder_path else f"--model_dir={model_dir}"
        raise UsageError(f"{where}: no encoder at {path}; train one with train.py "
                         "(it writes MODEL_DIR/encoder.keras) or pass --encoder=PATH")
    try:
        return keras.models.load_model(path), path
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file, whatever Keras raises
        raise UsageError(f"{path} is not a readable Keras model ({type(e).__name__}); if a "
                         "train.py run wrote it, rerun the same train.py command to write it "
                         "again from the last checkpoint") from None
