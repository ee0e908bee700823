"""The mobile inverted bottleneck (MBConv) shared by MnasNet and EfficientNet-Lite.

MBConv (MobileNetV2 Sec. 3.3; MnasNet Fig. 7; EfficientNet Sec. 4):

    x -> [1x1 expand conv (x e), BN, act] -> k x k depthwise conv (stride s), BN, act
      -> [squeeze-and-excitation] -> 1x1 project conv, BN -> (+ x when s = 1 and c_in = c_out)

With e = 1 the expansion conv is absent: MnasNet calls that block "SepConv" (depthwise
separable). Squeeze-and-excitation (Hu et al. 2018) as in the MnasNet / EfficientNet reference
code: global average pool -> 1x1 conv to max(1, int(c_in x se_ratio)) channels, ReLU (MnasNet) or
the block's activation (EfficientNet) -> 1x1 conv back to c_in x e channels, sigmoid -> rescale.

Only built-in Keras layers are used, so every network built from this block serialises to
`.keras` and converts to TFLite builtins without custom objects. Every builder takes `lib`, the
Keras to build with: `keras` (Keras 3, the default) or `tf_keras` (Keras 2, for the
quantization-aware-training twin in `qat`); both give the same layers, names and weights.
"""

import dataclasses

import keras

# The TF reference implementations' batch norm (TF momentum 0.99 == Keras momentum 0.99).
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
DEPTH_DIVISOR = 8


@dataclasses.dataclass(frozen=True)
class Stage:
    """One row of a network's block table: `repeats` blocks, the first with `stride`."""

    repeats: int
    expand_ratio: int
    kernel: int
    stride: int
    se_ratio: float
    filters: int
    skip: bool = True


def round_filters(filters, width, divisor=DEPTH_DIVISOR):
    """Channels x width, rounded to a multiple of `divisor`, never below 90% (reference code)."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def conv_bn(x, filters, kernel, stride, activation, name, lib=keras):
    """Conv (no bias) -> BN -> activation (None: linear)."""
    x = lib.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = lib.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name=f"{name}_bn")(x)
    if activation is not None:
        x = lib.layers.Activation(activation, name=f"{name}_{activation}")(x)
    return x


def mbconv(x, filters_in, filters_out, stage, stride, activation, name, se_activation="relu",
           drop_rate=0.0, lib=keras):
    """One MBConv block (module docstring); `stage` gives e, k, se_ratio and skip."""
    expanded = filters_in * stage.expand_ratio
    inputs = x
    if stage.expand_ratio != 1:
        x = conv_bn(x, expanded, 1, 1, activation, f"{name}_expand", lib)
    x = lib.layers.DepthwiseConv2D(stage.kernel, stride, padding="same", use_bias=False,
                                     depthwise_initializer="he_normal", name=f"{name}_dwconv")(x)
    x = lib.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                                        name=f"{name}_dwconv_bn")(x)
    x = lib.layers.Activation(activation, name=f"{name}_dwconv_{activation}")(x)
    if stage.se_ratio:
        squeezed = max(1, int(filters_in * stage.se_ratio))
        se = lib.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_squeeze")(x)
        se = lib.layers.Conv2D(squeezed, 1, activation=se_activation,
                                 name=f"{name}_se_reduce")(se)
        se = lib.layers.Conv2D(expanded, 1, activation="sigmoid", name=f"{name}_se_expand")(se)
        x = lib.layers.Multiply(name=f"{name}_se_excite")([x, se])
    x = conv_bn(x, filters_out, 1, 1, None, f"{name}_project", lib)
    if stage.skip and stride == 1 and filters_in == filters_out:
        if drop_rate > 0:  # stochastic depth ("drop connect"): drops the whole residual branch
            x = lib.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1),
                                     name=f"{name}_drop")(x)
        x = lib.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def block_name(stage_index, repeat_index, stage):
    """Names that read like the papers' tables: stage3b_mbconv3_k5x5_se, stage1a_sepconv_k3x3."""
    kind = "sepconv" if stage.expand_ratio == 1 else f"mbconv{stage.expand_ratio}"
    se = "_se" if stage.se_ratio else ""
    letter = chr(ord("a") + repeat_index)
    return f"stage{stage_index}{letter}_{kind}_k{stage.kernel}x{stage.kernel}{se}"


def mobile_network(inputs, stages, width, activation, stem_filters, head_filters,
                   se_activation="relu", drop_connect_rate=0.0, scale_stem_head=True, lib=keras):
    """Stem conv 3x3/2 -> the MBConv stages -> 1x1 head conv; returns the head feature map."""
    def head_or_stem(filters):
        return round_filters(filters, width) if scale_stem_head else filters

    x = conv_bn(inputs, head_or_stem(stem_filters), 3, 2, activation, "stem", lib)
    filters_in = head_or_stem(stem_filters)
    total = sum(s.repeats for s in stages)
    done = 0
    for i, stage in enumerate(stages, start=1):
        filters_out = round_filters(stage.filters, width)
        for r in range(stage.repeats):
            x = mbconv(x, filters_in, filters_out, stage, stage.stride if r == 0 else 1,
                       activation, block_name(i, r, stage), se_activation=se_activation,
                       drop_rate=drop_connect_rate * done / total, lib=lib)
            filters_in = filters_out
            done += 1
    return conv_bn(x, head_or_stem(head_filters), 1, 1, activation, "head", lib)


def classifier_or_pooling(x, include_top, classes, pooling, dropout_rate, lib=keras):
    """keras.applications' top: pooled features, or pool -> dropout -> Dense(classes, softmax)."""
    if include_top:
        x = lib.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = lib.layers.Dropout(dropout_rate, name="top_dropout")(x)
        return lib.layers.Dense(classes, activation="softmax", name="predictions")(x)
    if pooling == "avg":
        return lib.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return lib.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x
