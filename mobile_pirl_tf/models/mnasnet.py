"""MnasNet-A1 and MnasNet-B1 (Tan et al., "MnasNet: Platform-Aware Neural Architecture Search
for Mobile", CVPR 2019), as keras.applications-style functional builders.

MnasNet-A1 is the searched network of the paper's Fig. 7(a): a 3x3/2 stem conv with 32
channels, then (repeats, block, kernel, SE, output channels):

    1 x SepConv    k3x3      16        |   4 x MBConv6 k3x3      80
    2 x MBConv6    k3x3      24        |   2 x MBConv6 k3x3, SE 112
    3 x MBConv3    k5x5, SE  40        |   3 x MBConv6 k5x5, SE 160
                                       |   1 x MBConv6 k3x3     320

then a 1x1 conv to 1280, global pooling and the classifier. SE squeezes to 0.25 x the block's
input channels. MnasNet-B1 is the variant without SE released with the reference code (and
`torchvision.models.mnasnet1_0`). ReLU everywhere; batch norm momentum 0.99, epsilon 1e-3 as
in the TF reference. Published at 224 px with 1000 classes: A1 3.9M parameters, 312M
multiply-adds; B1 4.4M parameters, 315M multiply-adds.

Inputs are float RGB pixels in [0, 255], normalised inside the model with the ImageNet mean and
standard deviation (the reference code's preprocessing).
"""

import keras

from mobile_pirl_tf.models.mbconv import Stage, classifier_or_pooling, mobile_network

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

MNASNET_A1_STAGES = (
    Stage(1, 1, 3, 1, 0.0, 16, skip=False),
    Stage(2, 6, 3, 2, 0.0, 24),
    Stage(3, 3, 5, 2, 0.25, 40),
    Stage(4, 6, 3, 2, 0.0, 80),
    Stage(2, 6, 3, 1, 0.25, 112),
    Stage(3, 6, 5, 2, 0.25, 160),
    Stage(1, 6, 3, 1, 0.0, 320),
)

MNASNET_B1_STAGES = (
    Stage(1, 1, 3, 1, 0.0, 16, skip=False),
    Stage(3, 3, 3, 2, 0.0, 24),
    Stage(3, 3, 5, 2, 0.0, 40),
    Stage(3, 6, 5, 2, 0.0, 80),
    Stage(2, 6, 3, 1, 0.0, 96),
    Stage(4, 6, 5, 2, 0.0, 192),
    Stage(1, 6, 3, 1, 0.0, 320),
)


def imagenet_normalization(lib=keras):
    """(x - ImageNet mean) / ImageNet std on [0, 255] pixels, as a serialisable layer."""
    return lib.layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD],
                                      name="imagenet_normalization")


def _mnasnet(stages, name, input_shape, alpha, include_top, classes, pooling, dropout_rate, lib):
    inputs = lib.Input(input_shape or (224, 224, 3), name="pixels")
    x = imagenet_normalization(lib)(inputs)
    x = mobile_network(x, stages, alpha, "relu", stem_filters=32, head_filters=1280, lib=lib)
    outputs = classifier_or_pooling(x, include_top, classes, pooling, dropout_rate, lib)
    return lib.Model(inputs, outputs, name=name)


def MnasNetA1(input_shape=None, alpha=1.0, include_top=True, classes=1000, pooling=None,
              dropout_rate=0.2, lib=keras):
    """MnasNet-A1 (with squeeze-and-excitation). `alpha` is the width (depth) multiplier."""
    return _mnasnet(MNASNET_A1_STAGES, "mnasnet_a1", input_shape, alpha, include_top, classes,
                    pooling, dropout_rate, lib)


def MnasNetB1(input_shape=None, alpha=1.0, include_top=True, classes=1000, pooling=None,
              dropout_rate=0.2, lib=keras):
    """MnasNet-B1 (no squeeze-and-excitation). `alpha` is the width (depth) multiplier."""
    return _mnasnet(MNASNET_B1_STAGES, "mnasnet_b1", input_shape, alpha, include_top, classes,
                    pooling, dropout_rate, lib)
