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
   layer (MobileNetV3's hard-swish arithmetic, EfficientNet-B0's Rescaling / Normalization and
   swish); here those layers are simply left un-annotated: they stay float during QAT, and the
   int8 converter calibrates them with the representative images like post-training int8 does.
3. `distill(...)`: label-free fine-tuning by FEATURE DISTILLATION: the fake-quantized encoder
   learns to reproduce the float encoder's pooled features on unlabelled images (mean squared
   error of the features standardised by the float encoder's per-feature spread, the scale
   the linear probe sees: plain MSE lets a few large features drown the small ones). Chosen over the PIRL loss because it needs no memory bank or heads, cannot drift away
   from the representation that was evaluated in float, and targets exactly what quantization
   damages (the features), so a few epochs on a few hundred images suffice.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # what tfmot sets anyway; set it up front

import numpy as np  # noqa: E402
import tf_keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # noqa: E402
    default_8bit_quantize_registry)

from mobile_pirl_tf import backbones  # noqa: E402


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
    builder, _ = backbones.BACKBONES[backbone]
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


def quantize_aware(model):
    """The fake-quantized (QAT) version of a flat tf_keras model (module docstring).

    Batch norms that follow a convolution are annotated too, so tfmot's Conv+BN transforms
    apply (no fake-quant between the conv and its BN; quantize after the BN, as the int8
    converter folds them). Without it the pre-BN conv output is quantized, which destroys
    features whose BN rescales a small variance (seen: cosine 0.13 to the float encoder).
    """
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    convs = (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D)
    after_conv = {layer.name for layer in model.layers
                  if isinstance(layer, tf_keras.layers.BatchNormalization)
                  and isinstance(layer.inbound_nodes[0].inbound_layers, convs)}

    def clone(layer):
        new = layer.__class__.from_config(layer.get_config())
        return annotate(new) if registry.supports(layer) or layer.name in after_conv else new

    annotated = tf_keras.models.clone_model(model, clone_function=clone)
    annotated.set_weights(model.get_weights())
    with tfmot.quantization.keras.quantize_scope():
        return tfmot.quantization.keras.quantize_apply(annotated)


RANGE_VARIABLES = {"post_activation_min": min, "output_min": min,
                   "post_activation_max": max, "output_max": max}


def calibrate_ranges(qat_model, twin_model, images, batch_size=32):
    """Sets every activation quantizer's range to the float twin's observed range.

    tfmot starts activation ranges at [-6, 6] and moves them by an exponential moving average
    (decay 0.999) during training, so a short fine-tune would keep ranges that are far too wide
    or too narrow for most layers; here they start from the data, like post-training int8.
    """
    wrappers = [layer for layer in qat_model.layers if hasattr(layer, "layer") and any(
        _short(v.name) in RANGE_VARIABLES for v in layer.non_trainable_weights)]
    if not wrappers:
        return 0
    # The twin's own (last) node of each layer: a flattened layer also has a node in the
    # nested model it came from.
    probe = tf_keras.Model(twin_model.inputs, [_last_output(twin_model.get_layer(w.layer.name))
                                               for w in wrappers])
    outputs = probe.predict(np.asarray(images, np.float32), batch_size=batch_size, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    for wrapper, out in zip(wrappers, outputs):
        low, high = min(0.0, float(np.min(out))), max(float(np.max(out)), 1e-3)
        for v in wrapper.non_trainable_weights:
            kind = RANGE_VARIABLES.get(_short(v.name))
            if kind is not None:
                v.assign(low if kind is min else high)
    return len(wrappers)


def _last_output(layer):
    return layer.get_output_at(len(layer.inbound_nodes) - 1)


def _short(name):
    return name.split("/")[-1].split(":")[0]


def distill(qat_model, images, teacher_features, epochs, learning_rate=1e-4, batch_size=32,
            seed=0, verbose=0):
    """Feature distillation (module docstring); returns the per-epoch losses.

    Batch norm is frozen (inference mode, moving statistics kept): re-estimating it from a few
    hundred images in small batches moves the features away from the float encoder's (seen:
    mean cosine 0.14 after one epoch on 20 images with BN training, 0.99 frozen).
    """
    tf_keras.utils.set_random_seed(seed)
    for layer in qat_model.layers:
        if isinstance(getattr(layer, "layer", layer), tf_keras.layers.BatchNormalization):
            layer.trainable = False
    teacher_features = np.asarray(teacher_features, np.float32)
    spread = teacher_features.std(axis=0)
    scale = 1.0 / np.maximum(spread, 1e-3 * max(float(spread.max()), 1e-12))

    def standardised_mse(target, prediction):
        return tf_keras.backend.mean(tf_keras.backend.square((prediction - target) * scale), -1)

    qat_model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate), loss=standardised_mse)
    history = qat_model.fit(np.asarray(images, np.float32), np.asarray(teacher_features, np.float32),
                            batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
    return [float(x) for x in history.history["loss"]]
