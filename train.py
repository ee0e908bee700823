"""PIRL pretraining of a mobile backbone.

    python train.py --backbone=efficientnetb0                      # TFDS stl10 (unlabelled split)
    python train.py --backbone=mobilenetv3small --data_dir=PATH --image_size=64 --batch_size=64

Rerunning with the same --model_dir resumes from the last finished epoch.
"""

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from mobile_pirl_tf import UsageError  # noqa: E402
from mobile_pirl_tf import train_flags  # noqa: E402

FLAGS = flags.FLAGS
train_flags.define_flags()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.getLogger().setLevel(logging.INFO)
    config = train_flags.config_from_flags()
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
