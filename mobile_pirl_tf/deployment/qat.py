"""Quantization-aware training (QAT) of an encoder with tensorflow-model-optimization (tfmot).

This is the ONLY module that imports `tf_keras` (Keras 2) and tfmot: tfmot works only on
tf_keras models, and importing it can switch `tf.keras` to Keras 2 for the process (the rest of
the package writes `import keras`, Keras 3, and never `tf.keras`).

1. `twin(encoder, backbone, width)`: the same backbone rebuilt in tf_keras as ONE flat
   functional model (tfmot cannot quantize nested models), the Keras 3 weights copied layer by
   layer (paired in graph order, checked by class and shape). `twin_max_difference` checks it
   reproduces the Keras 3 features.
2. `quantize_aware(twin)`: fake-quantization inserted by tfmot's default 8-bit scheme on every
   layer tfmot supports. `quantize_model` rejects whole networks that contain an unsupported
   layer (the squeeze-excite Multiply of MobileNetV3 / MnasNet-A1 / EfficientNet-B0, the
   Rescaling / Normalization of the input, MobileNetV3's hard-swish arithmetic); here the
   Multiply layers get a fake-quantized OUTPUT (what the int8 converter makes of them: a
   quantized MUL), so QAT trains the network with the rounding it will meet; the input
   preprocessing and the rest of the hard-swish arithmetic (TF-op lambdas: + 3, ReLU6, / 6)
   stay float and are calibrated like post-training int8 (the QAT file keeps hard-swish as ADD /
   MUL ops where the post-training one has HARD_SWISH). Depthwise weights are
   fake-quantized per channel, as the converter quantizes them (tfmot's default shares one range
   across the channels of a depthwise kernel: `DepthwiseWeightsQuantizer`).
3. `distill(...)`: label-free fine-tuning by FEATURE DISTILLATION: the fake-quantized encoder
   learns to reproduce the float encoder's pooled features on unlabelled images (mean squared
   error of the features standardised by the float encoder's per-feature spread, the scale
   the linear probe sees: plain MSE lets a few large features drown the small ones). Chosen
   over the PIRL loss because it needs no memory bank or heads, cannot drift away from the
   representation that was evaluated in float, and targets exactly what quantization damages
   (the features), so a few epochs on a few thousand images suffice
   (`core.export_config.QAT_IMAGES`).
Before distilling, `calibrate_ranges` sets every weight and activation range from the weights
and the data (tfmot's initial ranges are far off), activation ranges from per-batch extremes
robust to one unusual image, so the fake-quantized model starts at or above post-training int8
and distillation only has to improve on it. The measurements behind each choice are in
docs/notes/int8-accuracy.md.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # what tfmot sets anyway; set it up front

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_configs,
    default_8bit_quantize_registry,
    default_8bit_quantize_scheme,
)
from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import (  # noqa: E402
    QuantizeLayer,
)

from mobile_pirl_tf.models import backbones  # noqa: E402


def _flat_layers(model):
    """Every non-model layer of a (possibly nested) Keras 2 or Keras 3 model."""
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from _flat_layers(layer)
        else:
            yield layer


def build_flat_twin(backbone, width, image_size):
    """The backbone as one flat tf_keras functional model, [S, S, 3] pixels -> pooled features.

    Built like the Keras 3 backbone, for ANY input size (keras.applications pads stride-2
    convolutions differently when the size is known: a twin built at a fixed size computes
    other features), then re-applied layer by layer, nested models inlined, on a fixed input.
    """
    builder = backbones.BACKBONES[backbone]
    net = builder(width, backbones.ANY_SIZE, False, tf_keras)
    inputs = tf_keras.Input((image_size, image_size, 3), name="pixels")
    return tf_keras.Model(inputs, _inline(net, inputs), name=net.name)


def _inline(model, x):
    """Calls the layers of a functional tf_keras model on x following its graph (as Keras'
    own Functional does), inlining nested models; returns the output tensor."""
    tensors = {str(id(model.inputs[0])): x}

    def lookup(kt_id):
        return [tensors[kt_id]]  # map_arguments pops one value per use

    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.InputLayer):
            continue
        node = layer.inbound_nodes[0]              # the node of `layer` inside `model`
        args, kwargs = node.map_arguments(_Lookup(lookup))
        if hasattr(layer, "layers"):
            out = _inline(layer, args[0])
        else:
            out = layer(*args, **kwargs)
        tensors[str(id(node.outputs))] = out
    return tensors[str(id(model.outputs[0]))]


class _Lookup(dict):
    """tensor_dict for Node.map_arguments: each lookup returns a fresh one-element list."""

    def __init__(self, lookup):
        super().__init__()
        self._lookup = lookup

    def __getitem__(self, key):
        return self._lookup(key)


def twin(encoder, backbone, width=1.0):
    """The tf_keras twin of a Keras 3 encoder (module docstring), weights copied.

    Layers with weights are paired in graph order (Keras 3 renamed some keras.applications
    layers, e.g. MobileNetV3's 'Conv/BatchNorm' is 'conv_bn'), and every pair must agree on
    layer class and weight shapes.
    """
    image_size = int(encoder.input.shape[1])
    model = build_flat_twin(backbone, width, image_size)
    targets = [layer for layer in _flat_layers(model) if layer.weights]
    sources = [layer for layer in _flat_layers(encoder) if layer.weights]
    if len(sources) != len(targets):
        raise ValueError(f"the tf_keras twin of {backbone} has {len(targets)} layers with "
                         f"weights, the encoder {len(sources)}: is --backbone right?")
    for source, target in zip(sources, targets):
        shapes = [tuple(w.shape) for w in source.weights]
        if (type(source).__name__ != type(target).__name__
                or shapes != [tuple(w.shape) for w in target.weights]):
            raise ValueError(f"the tf_keras twin of {backbone} does not match the encoder at "
                             f"layer {source.name} ({type(source).__name__} {shapes}): "
                             "is --backbone / --width right?")
        target.set_weights([w.numpy() for w in source.weights])
    return model


def twin_max_difference(encoder, twin_model, images):
    """Largest absolute difference of the two models' features on `images`."""
    a = np.asarray(encoder(images, training=False))
    b = twin_model(images, training=False).numpy()
    return float(np.max(np.abs(a - b)))


# Layers tfmot's 8-bit registry does not support, fake-quantized at their output (module docstring).
# Not the input preprocessing (Rescaling, Normalization), also unsupported: it stays float in QAT
# and is quantized by the converter from the calibration images, as in post-training int8. It has
# nothing to learn, and a fake-quantized Normalization makes tfmot put a QuantizeLayer on the
# pixels, which the converter turns into QUANTIZE -> DEQUANTIZE -> QUANTIZE with a coarser pixel
# step than the post-training file's QUANTIZE -> SUB.
OUTPUT_QUANTIZED = (tf_keras.layers.Multiply,)


class DepthwiseWeightsQuantizer(tfmot.quantization.keras.quantizers.LastValueQuantizer):
    """8-bit symmetric weights quantizer of a DepthwiseConv2D kernel [k, k, C, 1] with one range
    per channel, as the int8 converter quantizes depthwise weights.

    tfmot's conv weights quantizer takes the channels from the kernel's LAST axis, the depth
    multiplier (1) of a depthwise kernel, so it fake-quantizes all channels on ONE grid
    (tensorflow/model-optimization#808): QAT trained MobileNet-style depthwise layers with a
    coarser rounding than the file has. Here the kernel is quantized with its two last axes
    swapped, [k, k, 1, C], as tfmot's own Conv2DTranspose quantizer does (a reshape instead makes
    the converter fail: "'tfl.quantize' op requires the same shape for all operands and
    results"). It makes the QAT model round as the file does; weight rounding is a small part of
    the int8 error, so its effect on accuracy is small (docs/notes/int8-accuracy.md).
    """

    def __init__(self):
        super().__init__(num_bits=8, per_axis=True, symmetric=True, narrow_range=True)

    def build(self, tensor_shape, name, layer):
        rows, cols, channels, multiplier = tensor_shape
        if multiplier != 1:
            raise ValueError(f"depthwise kernels with depth_multiplier {multiplier} are not "
                             "supported by QAT here (every backbone uses 1)")
        return super().build(tf.TensorShape([rows, cols, multiplier, channels]), name, layer)

    def __call__(self, inputs, training, weights, **kwargs):
        swapped = tf.transpose(inputs, (0, 1, 3, 2))
        return tf.transpose(super().__call__(swapped, training, weights, **kwargs), (0, 1, 3, 2))

    def get_config(self):
        return {}


class _DepthwiseQuantizeConfig(default_8bit_quantize_registry.Default8BitConvQuantizeConfig):
    """tfmot's DepthwiseConv2D config with per-channel weights (`DepthwiseWeightsQuantizer`)."""

    def __init__(self):
        super().__init__(["depthwise_kernel"], ["activation"], False)
        self.weight_quantizer = DepthwiseWeightsQuantizer()

    def get_config(self):
        return {}


class _Registry(default_8bit_quantize_registry.Default8BitQuantizeRegistry):
    """tfmot's default 8-bit registry, with `_DepthwiseQuantizeConfig` for DepthwiseConv2D."""

    def get_quantize_config(self, layer):
        if isinstance(layer, tf_keras.layers.DepthwiseConv2D):
            return _DepthwiseQuantizeConfig()
        return super().get_quantize_config(layer)


class _Scheme(default_8bit_quantize_scheme.Default8BitQuantizeScheme):
    """tfmot's default 8-bit scheme (its layout transforms: no fake-quant between a conv and its
    batch norm, ...) with per-channel depthwise weights."""

    def get_quantize_registry(self):
        return _Registry()


def quantize_aware(model):
    """The fake-quantized (QAT) version of a flat tf_keras model (module docstring).

    Batch norms that follow a convolution are annotated too, so tfmot's Conv+BN transforms
    apply (no fake-quant between the conv and its BN; quantize after the BN, as the int8
    converter folds them). Without it the pre-BN conv output is quantized, which destroys
    features whose BN rescales a small variance.
    """
    scheme = _Scheme()
    registry = scheme.get_quantize_registry()
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    output_only = default_8bit_quantize_configs.Default8BitOutputQuantizeConfig
    convs = (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D)
    after_conv = {layer.name for layer in model.layers
                  if isinstance(layer, tf_keras.layers.BatchNormalization)
                  and isinstance(layer.inbound_nodes[0].inbound_layers, convs)}

    def clone(layer):
        new = layer.__class__.from_config(layer.get_config())
        if registry.supports(layer) or layer.name in after_conv:
            return annotate(new)
        if isinstance(layer, OUTPUT_QUANTIZED):
            return annotate(new, quantize_config=output_only())
        return new

    annotated = tf_keras.models.clone_model(model, clone_function=clone)
    annotated.set_weights(model.get_weights())
    with tfmot.quantization.keras.quantize_scope({output_only.__name__: output_only}):
        return tfmot.quantization.keras.quantize_apply(annotated, scheme=scheme)


# The activation-range variables of a QuantizeWrapper (its weight ranges are set from the
# weights at every call and are left alone).
WRAPPER_RANGES = ("post_activation_min", "post_activation_max", "output_min", "output_max")


def calibrate_ranges(qat_model, twin_model, images, batch_size=32):
    """Sets every activation quantizer's range to the float twin's observed range on `images`:
    the output range of each quantize-wrapped layer, and the input range of each QuantizeLayer
    (which tfmot inserts where the input or a float layer feeds a quantized one, e.g. the
    network input after the float preprocessing); then the weight ranges (`set_weight_ranges`).
    Returns how many layers' activation ranges were set.

    tfmot starts wrapper ranges at [-6, 6] and moves them by an exponential moving average
    (decay 0.999) during training, so a short fine-tune would keep ranges far too wide or too
    narrow; a QuantizeLayer starts at [0, 0]. Here they start from the data: the MEDIAN over
    batches of `batch_size` images of each batch's min and max (`robust_range`), the batch
    statistic that tfmot's moving average follows, with the median so that one unusual image
    cannot set a range for the whole export (the min and max over all images, what the
    converter's post-training calibration takes, can be widened several-fold by one image:
    docs/notes/int8-accuracy.md).
    """
    targets = []  # (range variables, twin tensor whose range they take)
    for layer in qat_model.layers:
        if hasattr(layer, "layer"):
            variables = [v for v in layer.non_trainable_weights if _short(v.name) in WRAPPER_RANGES]
            # The twin's own (last) node of the layer: a flattened layer also has a node in the
            # nested model it came from.
            source = _last_output(twin_model.get_layer(layer.layer.name))
        elif isinstance(layer, QuantizeLayer):
            variables = [v for v in layer.non_trainable_weights
                         if _short(v.name).endswith(("_min", "_max"))]
            inbound = layer.inbound_nodes[0].inbound_layers
            source = (twin_model.inputs[0] if isinstance(inbound, tf_keras.layers.InputLayer)
                      else _last_output(twin_model.get_layer(inbound.name)))
        else:
            continue
        if variables:
            targets.append((variables, source))
    set_weight_ranges(qat_model)
    if not targets:
        return 0
    probe = tf_keras.Model(twin_model.inputs, [source for _, source in targets])
    outputs = probe.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    for (variables, _), out in zip(targets, outputs):
        low, high = robust_range(out, batch_size)
        for v in variables:
            v.assign(low if _short(v.name).endswith("_min") else high)
    return len(targets)


def robust_range(values, batch_size):
    """(min, max) of `values` [N, ...]: the medians over consecutive batches of `batch_size` rows
    of each batch's min and max, widened to contain 0 (as int8 ranges must) and at least 1e-3."""
    rows = np.asarray(values).reshape(len(values), -1)
    starts = np.arange(0, len(rows), batch_size)
    lows = np.minimum.reduceat(rows.min(axis=1), starts)
    highs = np.maximum.reduceat(rows.max(axis=1), starts)
    return min(0.0, float(np.median(lows))), max(float(np.median(highs)), 1e-3)


def set_weight_ranges(qat_model):
    """Sets every weight quantizer's range from the current weights (per output channel).

    tfmot's weight quantizers record the weights' range only when called in training mode, and
    start at [-6, 6]: before the first training step (and for the last optimizer update after
    it) inference and the converter would quantize the weights in 255 steps of 12 / 254.
    """
    for layer in qat_model.layers:
        for weight, quantizer, variables in getattr(layer, "_weight_vars", []):
            quantizer(weight, training=True, weights=variables)


def _last_output(layer):
    return layer.get_output_at(len(layer.inbound_nodes) - 1)


def _short(name):
    return name.split("/")[-1].split(":")[0]


def deterministic_training(model):
    """Puts the float layers of a (QAT or plain) tf_keras model in inference mode for training,
    so that only the fake-quantization differs between the student and the teacher features.

    Batch norm is frozen (moving statistics kept): re-estimating it from a few hundred images in
    small batches moves the features away from the float encoder's. Dropout, the stochastic
    depth of EfficientNet-B0 / -Lite0's blocks, is switched off (rate 0): the teacher's features
    come from the deterministic network, and dropping residual branches at random makes the
    student chase noise.
    """
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, tf_keras.layers.BatchNormalization):
            layer.trainable = False
        elif isinstance(inner, tf_keras.layers.Dropout):
            inner.rate = 0.0


def distill(qat_model, images, teacher_features, feature_scale, epochs, learning_rate,
            batch_size=32, seed=0, verbose=0):
    """Feature distillation (module docstring); returns the per-epoch losses.

    The loss is the mean squared error of the features divided by `feature_scale` [d], the
    teacher features' per-feature spread (`agreement.feature_scale`, which the export report's
    `standardised_mse` uses too). The student trains in the inference mode of its float layers
    (`deterministic_training`). The Adam learning rate decays to 0 on a cosine over all steps:
    at a constant rate the loss can jump back up late, and the model is kept as the last step
    leaves it.
    """
    tf_keras.utils.set_random_seed(seed)
    deterministic_training(qat_model)
    teacher_features = np.asarray(teacher_features, np.float32)
    scale = (1.0 / np.asarray(feature_scale)).astype(np.float32)

    def standardised_mse(target, prediction):
        return tf_keras.backend.mean(tf_keras.backend.square((prediction - target) * scale), -1)

    steps = epochs * -(-len(images) // batch_size)
    schedule = tf_keras.optimizers.schedules.CosineDecay(learning_rate, max(steps, 1))
    qat_model.compile(optimizer=tf_keras.optimizers.Adam(schedule), loss=standardised_mse)
    history = qat_model.fit(np.asarray(images, np.float32), teacher_features,
                            batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
    set_weight_ranges(qat_model)  # the ranges of the weights after the last update
    return [float(x) for x in history.history["loss"]]
