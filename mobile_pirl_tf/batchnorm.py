"""Re-estimation of an encoder's batch-norm moving statistics from images.

A random-init network has moving statistics at their (0, 1) init, which makes its
inference-mode features collapse to a constant in deep mobile networks (MobileNetV3 uses BN
momentum 0.999); a PIRL run's statistics are mixed from 64 px image views and 32 px jigsaw
patches. Re-estimating them on plain images sets them to what the encoder will see.
"""

import contextlib
import dataclasses

import keras
import numpy as np

from mobile_pirl_tf import data

BN_RECALIBRATION_IMAGES = 2560


def recalibrate_batchnorm(encoder, split, image_size, num_images=BN_RECALIBRATION_IMAGES,
                          batch_size=128, seed=0):
    """Re-estimates every BatchNormalization layer's moving mean / variance as the average of
    batch statistics over `num_images` images of a `data.LabelledSplit` (centre crops, a seeded
    subset). Returns the number of BN layers recalibrated."""
    if num_images <= 0:
        return 0
    order = np.random.default_rng(seed).permutation(len(split.labels))[:num_images]
    if split.keys is not None:
        subset = dataclasses.replace(split, keys=[split.keys[i] for i in order], dataset=None)
    else:
        subset = dataclasses.replace(split, dataset=split.dataset.take(num_images))
    return recalibrate_batchnorm_on(encoder, data.split_images(subset, image_size, batch_size))


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


def recalibrate_on_source(encoder, source, num_images, seed=0, batch_size=128):
    """Re-estimates the statistics on `num_images` centre crops of an unlabelled `data.Source`
    (a seeded sample); returns the number of images used."""
    size = int(encoder.input.shape[1])
    counts = []

    def batches():  # streamed: at 224 px, 2,560 images would take 1.5 GB at once
        for batch in data.sample_dataset(source, num_images, size, seed).batch(batch_size):
            counts.append(int(batch.shape[0]))
            yield batch
    recalibrate_batchnorm_on(encoder, batches())
    return sum(counts)


def recalibrate_batchnorm_on(encoder, batches):
    """Sets every BatchNormalization layer's moving statistics to the average of its batch
    statistics over `batches` (an iterable of image batches); returns the number of layers."""
    layers = [layer for layer in encoder._flatten_layers(include_self=False)
              if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    try:
        for i, batch in enumerate(batches):
            for layer in layers:  # new = m * old + (1 - m) * batch: a running average over batches
                layer.momentum = i / (i + 1)
            encoder(batch, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)
