"""Few labels: fine-tuning an encoder on a class-balanced fraction of the labelled data, beside
the same backbone trained from scratch on the same images with the same budget
(`python evaluate.py --protocol=finetune --label_fraction=0.01,0.1`).

The subset (`label_subset`): for a fraction p of N labelled images in C classes, the same
round(p N / C) images of every class (all of a smaller class), drawn under the seed from each
class's files in listing order (`labelled.per_class_subset`), so every encoder compared sees the
same files (listed in the report).

The recipe (`FINETUNE_RECIPE`): encoder + a linear classifier, cross-entropy, SGD with Nesterov
momentum 0.9, batch 64 (or the subset, when smaller), cosine decay of the learning rate over
max(`min_steps`, `epochs` x steps per epoch) steps, weight decay 5e-5 (not on biases or
batch-norm), the supervised baseline's augmentation (random-resized crop of 25-100% of the
image, horizontal flip), batch-norm layers in training mode, their moving statistics then
re-estimated on centre crops of the labelled images (`features.recalibrate`:
MobileNetV3's BN momentum of 0.999 leaves them 80% at their initial value after 200 steps,
which collapses a scratch encoder's test predictions to one class). Encoder and classifier
learn at 0.1 x batch / 256, as the supervised baseline trains, for the pretrained and the
scratch encoder alike (`backbone_lr_ratio` 1): a pretrained encoder at a tenth of that, as
fine-tuning often does, scored 45.25% at 10% of Imagenette's labels against 51.36% at the full
rate (RESULTS.md, "Few labels"). Both get the same number of steps on the same images.
"""

import logging
import math
import time

import keras
import numpy as np
import tensorflow as tf

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.core.progress import Progress
from mobile_pirl_tf.data import labelled
from mobile_pirl_tf.evaluation import baselines, features, probes

FINETUNE_RECIPE = {"epochs": 30, "min_steps": 200, "batch_size": 64, "learning_rate": 0.1,
                   "backbone_lr_ratio": 1.0, "momentum": 0.9, "nesterov": True,
                   "weight_decay": 5e-5, "schedule": "cosine",
                   "augmentation": "random-resized crop 0.25-1, flip",
                   "batch_norm": "training mode, then moving statistics re-estimated on the "
                                 "labelled images (centre crops)"}


def parse_fractions(fractions):
    """Checks each fraction is in (0, 1]; returns them as floats."""
    out = []
    for value in fractions:
        try:
            fraction = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"--label_fraction must be numbers in (0, 1], got {value!r}") from None
        if not 0 < fraction <= 1:
            raise UsageError(f"--label_fraction={value} must be in (0, 1] (0.1 = 10% of the "
                             "labels)")
        out.append(fraction)
    return out


def label_subset(split, fraction, seed=0):
    """The class-balanced, seeded subset of a folder split (module docstring); the split itself
    for fraction 1. A fraction that leaves a class without an example is a UsageError."""
    if fraction >= 1:
        return split
    if split.keys is None:
        raise UsageError("--label_fraction needs a labelled folder (--data_dir), not TFDS")
    per_class = int(round(fraction * len(split.labels) / len(split.classes)))
    if per_class < 1:
        smallest = min(np.bincount(split.labels, minlength=len(split.classes)))
        raise UsageError(f"--label_fraction={fraction} leaves a class without an example "
                         f"({len(split.labels)} images in {len(split.classes)} classes; the "
                         f"smallest has {smallest}); raise it to at least "
                         f"{len(split.classes) / len(split.labels):.4g}")
    return labelled.per_class_subset(split, per_class, seed, f"fraction{fraction:g}")


class Classifier(keras.Model):
    """encoder -> Dense(classes); `train_step` scales the encoder's gradients by
    `backbone_lr_ratio` (with SGD and momentum, exactly a learning rate that many times the
    classifier's)."""

    def __init__(self, encoder, num_classes, backbone_lr_ratio=1.0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.head = keras.layers.Dense(num_classes, name="classifier")
        self.backbone_lr_ratio = backbone_lr_ratio

    def call(self, images, training=False):
        return self.head(self.encoder(images, training=training))

    def train_step(self, data):
        images, labels = data
        with tf.GradientTape() as tape:
            logits = self(images, training=True)
            loss = self.compute_loss(x=images, y=labels, y_pred=logits)
        variables = self.trainable_variables
        grads = tape.gradient(loss, variables)
        encoder_ids = {id(v) for v in self.encoder.trainable_variables}
        grads = [g * self.backbone_lr_ratio if id(v) in encoder_ids else g
                 for g, v in zip(grads, variables)]
        self.optimizer.apply(grads, variables)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(labels, logits)
        return {m.name: m.result() for m in self.metrics}


def train_classifier(encoder, train, image_size, backbone_lr_ratio, seed=0,
                     recipe=FINETUNE_RECIPE, verbose=0):
    """Fine-tunes `encoder` (in place) with a new linear classifier on `train`; returns the
    classifier model and the number of steps."""
    keras.utils.set_random_seed(seed)
    batch = min(recipe["batch_size"], len(train.labels))
    steps = max(recipe["min_steps"], recipe["epochs"] * (len(train.labels) // batch))
    model = Classifier(encoder, len(train.classes), backbone_lr_ratio)
    lr = recipe["learning_rate"] * batch / 256
    optimizer = keras.optimizers.SGD(keras.optimizers.schedules.CosineDecay(lr, steps),
                                     momentum=recipe["momentum"], nesterov=recipe["nesterov"],
                                     weight_decay=recipe["weight_decay"])
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(optimizer=optimizer, metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with Progress(f"fine-tuning on {len(train.labels)} images (steps)", steps) as progress:
        model.fit(baselines.supervised_dataset(train, image_size, batch, seed), epochs=1,
                  steps_per_epoch=steps, verbose=verbose, shuffle=False,  # the data shuffles
                  callbacks=[probes.keras_callback(progress, per="batch")])
    features.recalibrate(encoder, train, image_size, len(train.labels), seed=seed)
    return model, steps


def test_scores(model, test, image_size):
    """Class scores of the test split's centre crops."""
    return np.concatenate([model.predict_on_batch(images)
                           for images in labelled.split_images(test, image_size)])


def accuracy(scores, labels):
    out = {"top1": probes._topk_accuracy(scores, labels, 1)}
    if scores.shape[1] >= 5:
        out["top5"] = probes._topk_accuracy(scores, labels, 5)
    return out


def fine_tune_fraction(load_encoder, scratch_encoder, train, test, fraction, seed=0,
                       recipe=FINETUNE_RECIPE, log=print):
    """One fraction: the subset, the fine-tuned encoder's and the scratch encoder's test top-1 /
    top-5. `load_encoder()` returns a fresh copy of the pretrained encoder, `scratch_encoder()`
    a random-init one of the same backbone (None: no scratch run)."""
    subset = label_subset(train, fraction, seed)
    entry = {"label_fraction": fraction, "n_labelled": int(len(subset.labels)),
             "files": [str(k) for k in subset.keys] if fraction < 1 else "all"}
    for name, make, ratio in (("", load_encoder, recipe["backbone_lr_ratio"]),
                              ("scratch_", scratch_encoder, 1.0)):
        if make is None:
            continue
        started = time.time()
        encoder = make()
        size = int(encoder.input.shape[1])
        log(f"fine-tuning {'from scratch' if name else 'the encoder'} on {len(subset.labels)} "
            f"labelled images ({100 * fraction:g}%)")
        model, steps = train_classifier(encoder, subset, size, ratio, seed, recipe)
        result = accuracy(test_scores(model, test, size), test.labels)
        entry.update({f"{name}{k}": v for k, v in result.items()})
        entry[f"{name}steps"] = steps
        entry[f"{name}seconds"] = round(time.time() - started, 1)
        logging.info("%s: %s", name or "pretrained", result)
        keras.backend.clear_session()
    return entry


def fine_tune_report(load_encoder, scratch_encoder, train, test, fractions, seed=0,
                     recipe=FINETUNE_RECIPE, log=print):
    """Fine-tunes the encoder on each label fraction, beside the backbone from scratch.

    Args:
      load_encoder: a callable returning a fresh copy of the pretrained encoder (a
        `keras.Model`, float32 pixels [N, S, S, 3] in [0, 255] -> features [N, d]).
      scratch_encoder: a callable returning a random-init encoder of the same backbone, or
        None (no scratch run).
      train, test: `data.labelled.LabelledSplit`s (folder splits for fractions below 1).
      fractions: floats in (0, 1]: the class-balanced share of `train` labelled.
      seed: the subset draw, the classifier's initialisation and the augmentation.
      recipe: the fine-tuning recipe (`FINETUNE_RECIPE`).

    Returns:
      {"protocol": "finetune", "fractions": [one entry per fraction: label_fraction,
      n_labelled, files, top1, top5, steps, seconds, and the same with a "scratch_" prefix],
      "recipe", "seed", "n_train", "n_test", "num_classes"}; accuracies are fractions.
    """
    entries = [fine_tune_fraction(load_encoder, scratch_encoder, train, test, f, seed, recipe,
                                  log)
               for f in fractions]
    return {"protocol": "finetune", "fractions": entries, "recipe": recipe,
            "seed": seed, "n_train": int(len(train.labels)), "n_test": int(len(test.labels)),
            "num_classes": len(train.classes)}


def scratch_builder(backbone, image_size, width=1.0, seed=0):
    return lambda: baselines.random_encoder(backbone, image_size, width, seed)


def format_table(report):
    lines = [f"{'labels':>8}{'images':>8}{'finetune':>10}{'scratch':>9}{'gain':>7}"]
    for e in report["fractions"]:
        scratch = e.get("scratch_top1", math.nan)
        lines.append(f"{100 * e['label_fraction']:>7g}%{e['n_labelled']:>8}"
                     f"{100 * e['top1']:>10.2f}{100 * scratch:>9.2f}"
                     f"{100 * (e['top1'] - scratch):>7.2f}")
    return "\n".join(lines)
