"""Re-estimation of an encoder's batch-norm moving statistics from images.

A random-init network has moving statistics at their (0, 1) init, which makes its
inference-mode features collapse to a constant in deep mobile networks (MobileNetV3 uses BN
momentum 0.999); a PIRL run's statistics are mixed from 64 px image views and 32 px jigsaw
patches. Re-estimating them on plain images sets them to what the encoder will see.

The images come from the caller (`data.labelled.seeded_crops` for a labelled split,
`data.sources.sample_dataset` for unlabelled images): writing the encoder (training), the
probes (evaluation) and the export (deployment) all use this module.
"""

import contextlib

import keras

BN_RECALIBRATION_IMAGES = 2560


def moving_statistics(model):
    """The batch-norm moving mean and variance variables of a model."""
    return [v for v in model.non_trainable_variables if "moving" in v.path]


@contextlib.contextmanager
def statistics_kept(model):
    """Restores the model's batch-norm moving statistics on leaving the block."""
    variables = moving_statistics(model)
    saved = [v.numpy() for v in variables]
    try:
        yield
    finally:
        for v, value in zip(variables, saved):
            v.assign(value)


def recalibrate(encoder, batches):
    """Sets every BatchNormalization layer's moving mean and variance to the average of its
    batch statistics over `batches`.

    Args:
      encoder: a `keras.Model` (its BatchNormalization layers, nested ones included, are set).
      batches: an iterable of float32 image batches `[b, S, S, 3]`, pixels in [0, 255].

    Returns:
      The number of images seen (0 when the encoder has no batch-norm layer: nothing is read).
    """
    layers = [layer for layer in encoder._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    images = 0
    try:
        for i, batch in enumerate(batches):
            for layer in layers:  # new = m * old + (1 - m) * batch: a running average over batches
                layer.momentum = i / (i + 1)
            encoder(batch, training=True)
            images += int(batch.shape[0])
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return images
