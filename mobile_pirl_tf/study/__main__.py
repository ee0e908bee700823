"""The study: the proposal's experiments A-D as one resumable, budget-aware command.

    python -m mobile_pirl_tf.study --data_dir=$DATA/imagenette/train \\
        --eval_data_dir=$DATA/imagenette --image_size=64 --budget_hours=10 \\
        --output_dir=runs/study [--backbones=...] [--transforms=...] [--dry_run]

A  every --backbones entry with jigsaw, confirmed under paired seeds 1..N;
B  on the study backbone, a one-seed screen of every transformation and pair, then the best
   (and jigsaw) confirmed under seeds 1..N;
C  the other backbones with B's best combination, paired with their jigsaw arm;
D  accuracy against parameters, multiply-adds, LiteRT size and latency.
Each comparison: the paired difference with its 95% interval, Holm-corrected p-values and a
verdict (a winner, equivalence within --equivalence_margin, or inconclusive); seeds are added
to inconclusive comparisons while the budget lasts. --dry_run prints the plan at once.
Writes REPORT.md, results.csv, heatmap.png, pareto.png and records/ to --output_dir; a rerun
continues from the records. mobile_pirl_tf/study/stages.py documents the design.
"""

import logging
import os
import shlex
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mobile_pirl_tf.core import cli, config  # noqa: E402
from mobile_pirl_tf.study.config import StudyConfig  # noqa: E402

cli.define_flags(StudyConfig)
cli.define_flags(config.TrainConfig, exclude=("transforms", "model_dir", "monitor_data_dir",
                                              "monitor_every", "epochs", "schedule_epochs",
                                              "backbone", "seed"), group="Training (train.py)")


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.WARNING)
    study_config = cli.config_from_flags(StudyConfig).validate()
    train_config = cli.config_from_flags(config.TrainConfig, transforms="jigsaw", model_dir="",
                                         backbone=study_config.backbones[0]).validate()
    import tensorflow as tf

    from mobile_pirl_tf.study.run import run_study

    tf.get_logger().setLevel(logging.ERROR)  # retracing notices: every run builds a new model
    command = "python -m mobile_pirl_tf.study " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run_study(study_config, train_config, command=command)


if __name__ == "__main__":
    cli.run(main, __doc__)
