"""The kNN monitor of pretraining: the kNN probe on labelled data every N epochs, logged as
`knn_top1` (progress output, History, TensorBoard). `train.py` hands it to `training.fit.train`
when `--monitor_data_dir` is given."""

import logging
import time

import keras

from mobile_pirl_tf.data import labelled
from mobile_pirl_tf.evaluation import features, probes
from mobile_pirl_tf.models import backbones, batchnorm


class KNNMonitor(keras.callbacks.Callback):
    """Runs the kNN probe on labelled data every `every` epochs during pretraining and adds
    `knn_top1` to the epoch logs (progress bar, History, TensorBoard). Place it before the
    TensorBoard callback."""

    def __init__(self, data_dir, image_size, every=1):
        super().__init__()
        self.train, self.test = labelled.folder_splits(data_dir)
        self.image_size, self.every = image_size, max(1, int(every))

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every or logs is None:
            return
        started = time.time()
        encoder = backbones.build_encoder(self.model.backbone, self.image_size)
        # Recalibration must not leak into training: keep and restore the moving statistics.
        with batchnorm.statistics_kept(encoder):
            train_features, test_features = features.features_for(
                encoder, "", self.train, self.test, self.image_size)
        result = probes.evaluate_features("knn", train_features, self.train.labels,
                                          test_features, self.test.labels,
                                          len(self.train.classes))
        logs["knn_top1"] = result["top1"]
        logging.info("epoch %d: kNN top-1 %.4f on %s (%.1f s)", epoch + 1, result["top1"],
                     self.test.name, time.time() - started)
