"""PIRL pretraining of a mobile backbone.

    python train.py --backbone=efficientnetb0                      # TFDS stl10 (unlabelled split)
    python train.py --backbone=mobilenetv3small --data_dir=PATH --image_size=64 --batch_size=64

Rerunning with the same --model_dir resumes from the last finished epoch.
"""

import errno
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mobile_pirl_tf.core import cli, config  # noqa: E402 - TensorFlow is imported only in main

cli.define_flags(config.TrainConfig)


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    train_config = cli.config_from_flags(config.TrainConfig).validate()
    from mobile_pirl_tf.training.fit import train

    monitors = []
    if train_config.monitor_data_dir:
        from mobile_pirl_tf.evaluation.monitor import KNNMonitor

        monitors.append(KNNMonitor(train_config.monitor_data_dir, train_config.image_size,
                                   train_config.monitor_every))
    try:
        summary = train(train_config, extra_callbacks=monitors)
    except FloatingPointError as e:
        cli.fail(e)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        cli.fail(f"no space left on the device of {train_config.model_dir}; free some and rerun "
                 "(the last finished epoch's checkpoint is intact)")
    loss = summary["final"].get("loss")
    print(f"done: {summary['epochs_done']} epochs, encoder at {summary['encoder']}"
          + (f", final loss {loss:.4f}" if loss is not None else ""))


if __name__ == "__main__":
    cli.run(main, __doc__)
