"""EfficientNet-Lite0 (the EfficientNet-Lite release, Google 2020), a keras.applications-style
functional builder.

EfficientNet-Lite is EfficientNet made for integer-only phone accelerators. Starting from
EfficientNet-B0 (Tan & Le, ICML 2019, Table 1), the release:

- removes squeeze-and-excitation (poorly supported on mobile accelerators),
- replaces swish by ReLU6 (bounded activations quantise well),
- fixes the stem (32) and head (1280) channels when the network is scaled (Lite1-4; for Lite0
  this changes nothing, and `alpha` here scales only the blocks),
- keeps B0's blocks: MBConv1 k3 16, 2 x MBConv6 k3 24, 2 x MBConv6 k5 40, 3 x MBConv6 k3 80,
  3 x MBConv6 k5 112, 4 x MBConv6 k5 192, 1 x MBConv6 k3 320; batch norm momentum 0.99,
  epsilon 1e-3; dropout 0.2 and stochastic depth ("drop connect") 0.2 for training.

Published at 224 px with 1000 classes: 4.7M parameters, 407M multiply-adds. Inputs are float RGB
pixels in [0, 255], normalised inside the model as the release does: (x - 127) / 128.
"""

import keras

from mobile_pirl_tf.models.mbconv import Stage, classifier_or_pooling, mobile_network

EFFICIENTNET_B0_STAGES_WITHOUT_SE = (
    Stage(1, 1, 3, 1, 0.0, 16),
    Stage(2, 6, 3, 2, 0.0, 24),
    Stage(2, 6, 5, 2, 0.0, 40),
    Stage(3, 6, 3, 2, 0.0, 80),
    Stage(3, 6, 5, 1, 0.0, 112),
    Stage(4, 6, 5, 2, 0.0, 192),
    Stage(1, 6, 3, 1, 0.0, 320),
)


def EfficientNetLite0(input_shape=None, alpha=1.0, include_top=True, classes=1000, pooling=None,
                      dropout_rate=0.2, drop_connect_rate=0.2, lib=keras):
    """EfficientNet-Lite0. `alpha` scales the block channels (stem and head stay fixed)."""
    inputs = lib.Input(input_shape or (224, 224, 3), name="pixels")
    x = lib.layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0, name="rescale")(inputs)
    x = mobile_network(x, EFFICIENTNET_B0_STAGES_WITHOUT_SE, alpha, "relu6", stem_filters=32,
                       head_filters=1280, drop_connect_rate=drop_connect_rate,
                       scale_stem_head=False, lib=lib)
    outputs = classifier_or_pooling(x, include_top, classes, pooling, dropout_rate, lib)
    return lib.Model(inputs, outputs, name="efficientnet_lite0")
