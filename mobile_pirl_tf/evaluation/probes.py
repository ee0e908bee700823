"""Frozen-feature protocols: linear probe and kNN, with the report each writes.

- linear: features standardised with the train split's mean / std, then a linear softmax
  classifier trained with a fixed recipe (`LINEAR_RECIPE`): SGD with Nesterov momentum 0.9,
  batch 256, LR 0.1 with cosine decay over 100 epochs, L2 5e-4 on the weights. The PIRL paper's
  VISSL recipe (28 epochs, LR 0.01 with x0.1 steps, wd 5e-4) is meant for images with
  augmentation; on cached features a longer cosine schedule converges more reliably.
- knn: cosine-similarity weighted kNN as in NPID (Wu et al. 2018): the k = 20 nearest train
  features vote for their class with weight exp(s / 0.07).

Features come from `features.features_for` (batch-norm statistics re-estimated on 2,560 train
images first, for every encoder alike).
"""

import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.core.eval_config import PROTOCOLS
from mobile_pirl_tf.core.progress import Progress
from mobile_pirl_tf.core.records import DamagedRecord, read_json, write_json
from mobile_pirl_tf.evaluation import features
from mobile_pirl_tf.models import backbones
from mobile_pirl_tf.models.batchnorm import BN_RECALIBRATION_IMAGES

LINEAR_RECIPE = {"epochs": 100, "batch_size": 256, "learning_rate": 0.1, "momentum": 0.9,
                 "nesterov": True, "l2": 5e-4, "schedule": "cosine", "standardise": True}
KNN_K, KNN_TEMPERATURE = 20, 0.07


def _topk_accuracy(scores, labels, k):
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def knn_scores(train_features, train_labels, test_features, num_classes, k=KNN_K,
               temperature=KNN_TEMPERATURE, chunk=1024):
    """NPID weighted kNN: class scores [n_test, C] = sum over the k nearest (cosine) train
    examples of exp(similarity / temperature)."""
    train = tf.math.l2_normalize(tf.constant(train_features, tf.float32), axis=1)
    k = min(k, train.shape[0])
    labels = tf.constant(train_labels, tf.int64)
    out = []
    for start in range(0, len(test_features), chunk):
        test = tf.math.l2_normalize(tf.constant(test_features[start:start + chunk], tf.float32), 1)
        sims, idx = tf.math.top_k(tf.matmul(test, train, transpose_b=True), k=k)
        weights = tf.exp(sims / temperature)
        onehot = tf.one_hot(tf.gather(labels, idx), num_classes)          # [n, k, C]
        out.append(tf.reduce_sum(onehot * weights[:, :, None], axis=1).numpy())
    return np.concatenate(out)


def keras_callback(progress, per="epoch"):
    """A keras.callbacks.Callback advancing a `core.progress.Progress` by one per epoch (or
    per batch)."""
    class _Advance(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if per == "epoch":
                progress.update()

        def on_train_batch_end(self, batch, logs=None):
            if per == "batch":
                progress.update()

    return _Advance()


def linear_probe_scores(train_features, train_labels, test_features, num_classes, seed=0,
                        recipe=LINEAR_RECIPE):
    """Trains the linear classifier of the fixed recipe; returns test class scores [n_test, C]."""
    mean = train_features.mean(0)
    std = train_features.std(0) + 1e-6
    x_train = ((train_features - mean) / std).astype(np.float32)
    x_test = ((test_features - mean) / std).astype(np.float32)
    keras.utils.set_random_seed(seed)
    classifier = keras.Sequential([
        keras.Input((x_train.shape[1],)),
        keras.layers.Dense(num_classes, kernel_regularizer=keras.regularizers.L2(recipe["l2"])),
    ])
    steps = recipe["epochs"] * int(np.ceil(len(x_train) / recipe["batch_size"]))
    schedule = keras.optimizers.schedules.CosineDecay(recipe["learning_rate"], steps)
    classifier.compile(
        optimizer=keras.optimizers.SGD(schedule, momentum=recipe["momentum"],
                                       nesterov=recipe["nesterov"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with Progress("linear probe (epochs)", recipe["epochs"]) as progress:
        classifier.fit(x_train, train_labels, batch_size=recipe["batch_size"],
                       epochs=recipe["epochs"], shuffle=True, verbose=0,
                       callbacks=[keras_callback(progress)])
    return classifier.predict(x_test, batch_size=1024, verbose=0)


def evaluate_features(protocol, train_features, train_labels, test_features, test_labels,
                      num_classes, seed=0):
    """{top1, top5 (when >= 5 classes)} of a protocol on given features."""
    if protocol == "knn":
        scores = knn_scores(train_features, train_labels, test_features, num_classes)
    elif protocol == "linear":
        scores = linear_probe_scores(train_features, train_labels, test_features, num_classes, seed)
    else:
        raise UsageError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    result = {"top1": _topk_accuracy(scores, test_labels, 1)}
    if num_classes >= 5:
        result["top5"] = _topk_accuracy(scores, test_labels, 5)
    return result


def evaluate_encoder(encoder, encoder_path, train, test, protocol, output_dir, seed=0,
                     cache_dir=None, label=None, bn_images=BN_RECALIBRATION_IMAGES,
                     file_suffix=""):
    """Runs one protocol, writes output_dir/eval_<protocol><file_suffix>.json and returns its
    contents. `bn_images` > 0 re-estimates the encoder's batch-norm statistics on that many
    train images first; 0 evaluates the encoder as it is."""
    started = time.time()
    image_size = backbones.encoder_image_size(encoder)
    cache_dir = cache_dir or os.path.join(os.path.dirname(os.path.abspath(encoder_path)),
                                          "features")
    train_features, test_features = features.features_for(encoder, encoder_path, train, test,
                                                          image_size, cache_dir, bn_images)
    result = evaluate_features(protocol, train_features, train.labels, test_features,
                               test.labels, len(train.classes), seed)
    report = {"protocol": protocol, **result, "n_train": int(len(train.labels)),
              "n_test": int(len(test.labels)), "num_classes": len(train.classes),
              "encoder": os.path.abspath(encoder_path), "image_size": image_size,
              "feature_dim": int(train_features.shape[1]), "data": train.name.rsplit(":", 1)[0],
              "seconds": round(time.time() - started, 2), "label": label or "encoder",
              "bn_recalibration_images": bn_images}
    if protocol == "linear":
        report["recipe"] = LINEAR_RECIPE
    else:
        report.update(k=KNN_K, temperature=KNN_TEMPERATURE)
    os.makedirs(output_dir, exist_ok=True)
    write_json(os.path.join(output_dir, f"eval_{protocol}{file_suffix}.json"), report)
    return report


def protocol_bn_images(encoder_path, kind="pirl"):
    """How many train images the protocol re-estimates an encoder's batch-norm statistics on:
    none for a train.py encoder whose statistics were re-estimated on plain views when it was
    written (its run.json says so: what is evaluated is what is shipped), BN_RECALIBRATION_IMAGES
    for the random-init and supervised baselines (random init has no statistics; supervised
    ones come from augmented crops) and for encoders without that record."""
    run_path = os.path.join(os.path.dirname(os.path.abspath(encoder_path)), "run.json")
    if kind not in ("random", "supervised"):
        try:
            run = read_json(run_path, {})
        except DamagedRecord as e:  # the protocol's default: re-estimate
            logging.warning("%s; the encoder's batch-norm statistics are re-estimated", e)
            run = {}
        if run.get("encoder_bn_statistics", {}).get("images", 0) > 0:
            return 0
    return BN_RECALIBRATION_IMAGES


def gap_closed(pirl, random, supervised):
    """(pirl - random) / (supervised - random): the share of the supervised gain PIRL recovers."""
    return (pirl - random) / (supervised - random)


def format_table(reports):
    """A small text table of reports (one row each)."""
    lines = [f"{'model':<14}{'protocol':<9}{'top1':>7}{'top5':>7}{'n_train':>9}{'n_test':>8}"
             f"{'size':>6}{'bn':>6}{'sec':>8}"]
    for r in reports:
        top5 = f"{100 * r['top5']:7.2f}" if "top5" in r else f"{'-':>7}"
        lines.append(f"{r['label']:<14}{r['protocol']:<9}{100 * r['top1']:7.2f}{top5}"
                     f"{r['n_train']:>9}{r['n_test']:>8}{r['image_size']:>6}"
                     f"{r.get('bn_recalibration_images', 0):>6}{r['seconds']:>8.1f}")
    return "\n".join(lines)
