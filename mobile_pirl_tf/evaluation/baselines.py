"""Reference points for a PIRL encoder: the same backbone with random weights, and the same
backbone trained with labels (supervised) for a given epoch or time budget.

Supervised recipe: backbone + Linear(num_classes) on the labelled train split, augmentation =
random-resized crop (scale 0.25-1) + horizontal flip, SGD momentum 0.9, LR 0.1 x batch/256 with
cosine decay, weight decay 5e-5 (decoupled, not on batch-norm or biases), batch 64 by default.
With a time budget the number of epochs is chosen from the measured step time so the cosine
schedule completes.
"""

import logging
import time

import keras
import tensorflow as tf

from mobile_pirl_tf.data import augment, labelled, pipeline
from mobile_pirl_tf.models import backbones


def random_encoder(backbone_name, image_size, width=1.0, seed=0):
    keras.utils.set_random_seed(seed)
    return backbones.build_encoder(backbones.build_backbone(backbone_name, width), image_size)


def _train_view(image, image_size, seed):
    s = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    x = augment.random_resized_crop(tf.cast(image, tf.float32) / 255.0, image_size, (0.25, 1.0),
                                    s[0])
    return tf.image.stateless_random_flip_left_right(x, s[1]) * 255.0


def supervised_dataset(split, image_size, batch_size, seed=0):
    keys, decode = labelled.split_keys(split)
    labels = tf.data.Dataset.from_tensor_slices(split.labels)
    ds = tf.data.Dataset.zip(keys, labels).shuffle(len(split.labels), seed=seed)
    ds = ds.repeat().enumerate()
    ds = ds.map(lambda i, kl: (_train_view(decode(kl[0]), image_size,
                                           pipeline.example_seed(seed, 0, i)), kl[1]),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def supervised_encoder(backbone_name, image_size, train_split, epochs=30, budget_seconds=None,
                       batch_size=64, width=1.0, seed=0, weight_decay=5e-5, verbose=2):
    """Trains backbone + linear head with labels; returns (encoder, info dict)."""
    keras.utils.set_random_seed(seed)
    backbone = backbones.build_backbone(backbone_name, width)
    inputs = keras.Input((image_size, image_size, 3))
    logits = keras.layers.Dense(len(train_split.classes), name="classifier")(backbone(inputs))
    model = keras.Model(inputs, logits)
    steps_per_epoch = max(1, len(train_split.labels) // batch_size)
    ds = supervised_dataset(train_split, image_size, batch_size, seed)
    lr = 0.1 * batch_size / 256

    def compile_for(total_steps):
        optimizer = keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(lr, max(total_steps, 1)), momentum=0.9,
            weight_decay=weight_decay)
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        model.compile(optimizer=optimizer, metrics=["accuracy"],
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    started = time.time()
    if budget_seconds:
        # Measure the step time on a few steps, then pick the epochs that fit the budget.
        initial_weights = model.get_weights()
        compile_for(1)
        probe = 6
        model.fit(ds.take(2), verbose=0, shuffle=False)
        t = time.time()
        model.fit(ds.take(probe), verbose=0, shuffle=False)
        per_step = (time.time() - t) / probe
        remaining = budget_seconds - (time.time() - started)
        epochs = int(max(1, min(epochs, remaining / per_step // steps_per_epoch)))
        logging.info("supervised baseline: %.3f s/step -> %d epochs in the %.0f s budget",
                     per_step, epochs, budget_seconds)
        model.set_weights(initial_weights)  # the probe steps do not count as training
    compile_for(epochs * steps_per_epoch)
    history = model.fit(ds, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=verbose,
                        shuffle=False)  # the dataset shuffles itself
    info = {"epochs": epochs, "train_seconds": round(time.time() - started, 1),
            "final_train_accuracy": float(history.history["accuracy"][-1])}
    return backbones.build_encoder(backbone, image_size), info
