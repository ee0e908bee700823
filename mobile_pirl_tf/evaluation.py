"""Frozen-feature evaluation: linear probe and kNN, with feature caching and baselines.

Protocols (features: the encoder's pooled output on centre crops; the encoder is frozen, its
batch-norm statistics re-estimated on 2,560 train images first: `recalibrate_batchnorm`):

- linear: features standardised with the train split's mean / std, then a linear softmax
  classifier trained with a fixed recipe (`LINEAR_RECIPE`): SGD with Nesterov momentum 0.9,
  batch 256, LR 0.1 with cosine decay over 100 epochs, L2 5e-4 on the weights. The PIRL paper's
  VISSL recipe (28 epochs, LR 0.01 with x0.1 steps, wd 5e-4) is meant for images with
  augmentation; on cached features a longer cosine schedule converges more reliably.
- knn: cosine-similarity weighted kNN as in NPID (Wu et al. 2018): the k = 20 nearest train
  features vote for their class with weight exp(s / 0.07).

Labelled data: a folder with train/<class>/... and test/<class>/..., or a TFDS data set with
train and test splits. Class indices follow the sorted folder names (TFDS: its labels).
"""

import dataclasses
import hashlib
import json
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from mobile_pirl_tf import UsageError, data

LINEAR_RECIPE = {"epochs": 100, "batch_size": 256, "learning_rate": 0.1, "momentum": 0.9,
                 "nesterov": True, "l2": 5e-4, "schedule": "cosine", "standardise": True}
KNN_K, KNN_TEMPERATURE = 20, 0.07
PROTOCOLS = ("linear", "knn")


@dataclasses.dataclass
class LabelledSplit:
    name: str                 # identifies the data for the cache
    keys: list                # file paths (folder) or None (TFDS: images come from `dataset`)
    labels: np.ndarray
    classes: list
    dataset: object = None    # TFDS: a tf.data.Dataset of (encoded image, label)


def _class_folders(root):
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                  and not d.startswith("."))


def folder_splits(root):
    """(train, test) LabelledSplits from root/train/<class>/... and root/test/<class>/..."""
    for split in ("train", "test"):
        if not os.path.isdir(os.path.join(root, split)):
            raise UsageError(f"--data_dir={root} has no {split}/ folder; labelled data must be laid "
                             "out as train/<class>/... and test/<class>/...")
    classes = _class_folders(os.path.join(root, "train"))
    if not classes:
        raise UsageError(f"{root}/train has no class folders")
    unknown = sorted(set(_class_folders(os.path.join(root, "test"))) - set(classes))
    if unknown:
        raise UsageError(f"{root}/test has classes that train/ lacks: {', '.join(unknown[:5])}; "
                         "every test class needs training examples")
    splits = []
    for split in ("train", "test"):
        keys, labels = [], []
        for label, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            if not os.path.isdir(folder):
                continue
            files, _, _ = data.list_image_files(folder)
            keys += files
            labels += [label] * len(files)
        if not keys:
            raise UsageError(f"{root}/{split} holds no readable images")
        splits.append(LabelledSplit(f"{os.path.abspath(root)}:{split}", keys,
                                    np.array(labels, np.int64), classes))
    return tuple(splits)


def tfds_splits(name, data_dir=None):
    out = []
    for split in ("train", "test"):
        ds, builder = data.tfds_dataset(name, split, data_dir)
        label_feature = builder.info.features["label"]
        classes = list(getattr(label_feature, "names", None) or range(label_feature.num_classes))
        pairs = ds.map(lambda ex: (ex["image"], ex["label"]))
        labels = np.array([int(y) for _, y in pairs.as_numpy_iterator()], np.int64)
        out.append(LabelledSplit(f"tfds:{name}:{split}", None, labels, classes, pairs))
    return tuple(out)


def labelled_splits(dataset="stl10", data_dir=None, tfds_data_dir=None):
    if data_dir:
        return folder_splits(data_dir)
    return tfds_splits(dataset, tfds_data_dir)


def centre_crop(image, size):
    """Resize the shorter side to size / 0.875, then take the central size x size crop."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = (size / 0.875) / tf.reduce_min(shape)
    new = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    resized = tf.image.resize(tf.cast(image, tf.float32), new, method="bilinear", antialias=True)
    return tf.image.resize_with_crop_or_pad(resized, size, size)


def split_keys(split):
    """(dataset of keys in the split's order, key -> uint8 RGB image)."""
    if split.dataset is not None:
        return split.dataset.map(lambda key, _: key), data.decode_image
    return tf.data.Dataset.from_tensor_slices(split.keys), data.read_and_decode


def split_images(split, image_size, batch_size=128):
    """Batches of centre-cropped float pixels [0, 255] in the split's order."""
    keys, decode = split_keys(split)
    return keys.map(lambda key: centre_crop(decode(key), image_size),
                      num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(2)


BN_RECALIBRATION_IMAGES = 2560


def recalibrate_batchnorm(encoder, split, image_size, num_images=BN_RECALIBRATION_IMAGES,
                          batch_size=128, seed=0):
    """Re-estimates every BatchNormalization layer's moving mean / variance as the average of
    batch statistics over `num_images` train-split images (centre crops, a seeded subset).

    Part of the evaluation protocol, applied to every encoder alike: a random-init network has
    moving statistics at their (0, 1) init, which makes its inference-mode features collapse
    to a constant in deep mobile networks (MobileNetV3 uses BN momentum 0.999), and a short
    pretraining run leaves them stale and mixed with jigsaw-patch statistics. Returns the number
    of BN layers recalibrated.
    """
    if num_images <= 0:
        return 0
    order = np.random.default_rng(seed).permutation(len(split.labels))[:num_images]
    if split.keys is not None:
        subset = dataclasses.replace(split, keys=[split.keys[i] for i in order], dataset=None)
    else:
        subset = dataclasses.replace(split, dataset=split.dataset.take(num_images))
    return recalibrate_batchnorm_on(encoder, split_images(subset, image_size, batch_size))


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


def encoder_image_size(encoder):
    shape = encoder.input_shape
    if shape[1] is None or shape[1] != shape[2]:
        raise UsageError(f"the encoder's input {shape} is not a fixed square; export it with "
                         "backbones.build_encoder(backbone, image_size)")
    return int(shape[1])


def load_encoder(model_dir=None, encoder_path=None):
    path = encoder_path or os.path.join(model_dir or "", "encoder.keras")
    if not os.path.isfile(path):
        where = f"--encoder={encoder_path}" if encoder_path else f"--model_dir={model_dir}"
        raise UsageError(f"{where}: no encoder at {path}; train one with train.py "
                         "(it writes MODEL_DIR/encoder.keras) or pass --encoder=PATH")
    return keras.models.load_model(path), path


def _file_fingerprint(path):
    stat = os.stat(path)
    return f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


def cache_key(encoder_path, split, image_size, bn_images=BN_RECALIBRATION_IMAGES):
    """Changes when the encoder file, the data (names and file list), the size or the BN
    recalibration change."""
    h = hashlib.sha256()
    h.update(f"bn-recalibration:{bn_images}".encode())
    h.update(_file_fingerprint(encoder_path).encode())
    h.update(f"{split.name}:{image_size}:{len(split.labels)}".encode())
    for key in split.keys or []:
        h.update(key.encode())
    h.update(split.labels.tobytes())
    return h.hexdigest()[:20]


def _cache_path(cache_dir, encoder_path, split, image_size, bn_images):
    if not cache_dir:
        return None
    key = cache_key(encoder_path, split, image_size, bn_images)
    return os.path.join(cache_dir, f"{split.name.rsplit(':', 1)[-1]}-{key}.npy")


def extract_features(encoder, encoder_path, split, image_size, cache_dir=None,
                     bn_images=BN_RECALIBRATION_IMAGES):
    """Features [n, d] of a split, read from / written to cache_dir when given. The encoder
    must already be BN-recalibrated (see `features_for`)."""
    path = _cache_path(cache_dir, encoder_path, split, image_size, bn_images)
    if path and os.path.exists(path):
        logging.info("features from cache %s", path)
        return np.load(path)
    features = np.concatenate([encoder.predict_on_batch(batch)
                               for batch in split_images(split, image_size)])
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = path + ".tmp.npy"
        np.save(tmp, features)
        os.replace(tmp, path)
    return features


def features_for(encoder, encoder_path, train, test, image_size, cache_dir=None,
                 bn_images=BN_RECALIBRATION_IMAGES):
    """(train, test) features: from the cache, or after recalibrating BN on `bn_images` train
    images (0: keep the encoder's own moving statistics)."""
    paths = [_cache_path(cache_dir, encoder_path, s, image_size, bn_images) for s in (train, test)]
    if not all(p and os.path.exists(p) for p in paths):
        recalibrate_batchnorm(encoder, train, image_size, bn_images)
    return tuple(extract_features(encoder, encoder_path, s, image_size, cache_dir, bn_images)
                 for s in (train, test))


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
    classifier.fit(x_train, train_labels, batch_size=recipe["batch_size"],
                   epochs=recipe["epochs"], shuffle=True, verbose=0)
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
                     cache_dir=None, label=None, bn_images=BN_RECALIBRATION_IMAGES):
    """Runs one protocol, writes output_dir/eval_<protocol>.json and returns its contents."""
    started = time.time()
    image_size = encoder_image_size(encoder)
    cache_dir = cache_dir or os.path.join(os.path.dirname(os.path.abspath(encoder_path)),
                                          "features")
    train_features, test_features = features_for(encoder, encoder_path, train, test, image_size,
                                                 cache_dir, bn_images)
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
    suffix = "" if bn_images == BN_RECALIBRATION_IMAGES else f"_bn{bn_images}"
    with open(os.path.join(output_dir, f"eval_{protocol}{suffix}.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


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


class KNNMonitor(keras.callbacks.Callback):
    """Runs the kNN probe on labelled data every `every` epochs during pretraining and adds
    `knn_top1` to the epoch logs (progress bar, History, TensorBoard). Place it before the
    TensorBoard callback."""

    def __init__(self, data_dir, image_size, every=1):
        super().__init__()
        self.train, self.test = folder_splits(data_dir)
        self.image_size, self.every = image_size, max(1, int(every))

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every or logs is None:
            return
        from mobile_pirl_tf import backbones

        started = time.time()
        encoder = backbones.build_encoder(self.model.backbone, self.image_size)
        # Recalibration must not leak into training: keep and restore the moving statistics.
        moving = [v for v in encoder.non_trainable_variables if "moving" in v.path]
        saved = [v.numpy() for v in moving]
        try:
            train_features, test_features = features_for(encoder, "", self.train, self.test,
                                                         self.image_size)
        finally:
            for v, value in zip(moving, saved):
                v.assign(value)
        result = evaluate_features("knn", train_features, self.train.labels, test_features,
                                   self.test.labels, len(self.train.classes))
        logs["knn_top1"] = result["top1"]
        logging.info("epoch %d: kNN top-1 %.4f on %s (%.1f s)", epoch + 1, result["top1"],
                     self.test.name, time.time() - started)
