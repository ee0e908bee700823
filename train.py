"""PIRL pretraining of a mobile backbone.

    python train.py --backbone=efficientnetb0                      # TFDS stl10 (unlabelled split)
    python train.py --backbone=mobilenetv3small --data_dir=PATH --image_size=64 --batch_size=64

Rerunning with the same --model_dir resumes from the last finished epoch.
"""

import dataclasses
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from mobile_pirl_tf import UsageError  # noqa: E402
from mobile_pirl_tf.training import TrainConfig  # noqa: E402

_D = TrainConfig()
FLAGS = flags.FLAGS
flags.DEFINE_string("backbone", _D.backbone, "resnet50, mobilenetv2, mobilenetv3small, "
                    "mobilenetv3large or efficientnetb0.")
flags.DEFINE_integer("image_size", _D.image_size, "Side of the image view in pixels; jigsaw "
                     "geometry scales from the paper's 224/255/85/64.")
flags.DEFINE_float("width", _D.width, "Width multiplier (alpha) for MobileNetV2/V3.")
flags.DEFINE_enum("head", _D.head, ["linear", "mlp"], "Projection heads f and g.")
flags.DEFINE_integer("embedding_dim", _D.embedding_dim, "Embedding / memory-bank dimension.")
flags.DEFINE_enum("loss", _D.loss, ["nce", "infonce"], "NCE (the paper) or InfoNCE.")
flags.DEFINE_integer("num_negatives", _D.num_negatives, "Negatives per term, capped by the "
                     "data set size minus one.")
flags.DEFINE_bool("shared_negatives", _D.shared_negatives, "Draw one set of negatives per batch "
                  "(a matmul) instead of one per example (the paper; a gather of B x K rows).")
flags.DEFINE_float("temperature", _D.temperature, "tau in s(u, v) = cos(u, v) / tau.")
flags.DEFINE_float("pirl_lambda", _D.pirl_lambda, "Weight of the jigsaw term (Eq. 5).")
flags.DEFINE_float("bank_momentum", _D.bank_momentum, "m <- normalize(b m + (1 - b) f(v_I)).")
flags.DEFINE_integer("epochs", _D.epochs, "Total epochs (a rerun resumes up to this).")
flags.DEFINE_integer("batch_size", _D.batch_size, "Global batch size (over all replicas).")
flags.DEFINE_integer("steps_per_epoch", None, "Optional cap on steps per epoch.")
flags.DEFINE_float("learning_rate", _D.learning_rate, "SGD learning rate per 256 images "
                   "(scaled by batch_size / 256), cosine decay to 1/1000.")
flags.DEFINE_float("momentum", _D.momentum, "SGD momentum.")
flags.DEFINE_float("weight_decay", _D.weight_decay, "L2 on kernels (not batch-norm or bias).")
flags.DEFINE_integer("seed", _D.seed, "Seed for initialisation, views and negatives.")
flags.DEFINE_string("dataset", _D.dataset, "TFDS name (stl10 uses its unlabelled split; also "
                    "cifar10, imagenette/160px-v2, imagenet2012 with --tfds_manual_dir).")
flags.DEFINE_string("data_dir", None, "A folder of images (any nesting; labels ignored); "
                    "overrides --dataset.")
flags.DEFINE_string("tfds_data_dir", None, "Where prepared TFDS data sets are.")
flags.DEFINE_string("tfds_manual_dir", None, "Manual download folder (imagenet2012).")
flags.DEFINE_string("model_dir", _D.model_dir, "Run folder: checkpoints, logs, encoder.keras.")
flags.DEFINE_string("monitor_data_dir", None, "Labelled folder (train/<class>/, test/<class>/) "
                    "for a kNN probe during training, logged as knn_top1.")
flags.DEFINE_integer("monitor_every", 1, "Run the kNN probe every N epochs.")
flags.DEFINE_enum("strategy", _D.strategy, ["default", "mirrored"], "tf.distribute strategy.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.getLogger().setLevel(logging.INFO)
    config = TrainConfig(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(TrainConfig)
                            if f.name in FLAGS})
    from mobile_pirl_tf.training import train

    try:
        summary = train(config)
    except (UsageError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"done: {summary['epochs_done']} epochs, encoder at {summary['encoder']}, "
          f"final loss {summary['final'].get('loss', float('nan')):.4f}")


if __name__ == "__main__":
    app.run(main)
