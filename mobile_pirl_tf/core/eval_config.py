"""The settings of `python evaluate.py` (free of TensorFlow, like `config`): one dataclass whose
fields generate the tool's flags (`cli.define_flags`)."""

import dataclasses
from typing import Optional, Tuple

from mobile_pirl_tf.core.config import check, check_backbone, flag

PROTOCOLS = ("linear", "knn", "finetune")
FINETUNE_FRACTIONS = (0.01, 0.1)
BASELINES = ("random", "supervised")


@dataclasses.dataclass
class EvalConfig:
    """Frozen-feature evaluation (`python evaluate.py`) of an encoder or a baseline."""
    model_dir: Optional[str] = flag(None, "A train.py run folder (reads its encoder.keras).")
    encoder: Optional[str] = flag(None, "Path to an encoder.keras instead of --model_dir.")
    dataset: str = flag("stl10", "TFDS data set with train and test splits.")
    data_dir: Optional[str] = flag(None, "Folder with train/<class>/ and test/<class>/ (or "
                                   "val/<class>/; overrides --dataset).")
    tfds_data_dir: Optional[str] = flag(None, "Where TFDS data sets are prepared (default: "
                                        "~/tensorflow_datasets).")
    tfds_manual_dir: Optional[str] = flag(None, "Manual download folder (imagenet2012: "
                                          "ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar).")
    protocol: Tuple[str, ...] = flag(("linear",), "linear, knn (frozen features), finetune (the "
                                     "whole encoder, beside the backbone trained from scratch "
                                     "on the same labels); several: linear,knn,finetune.")
    label_fraction: Optional[Tuple[float, ...]] = flag(
        None, "Fractions of the labelled train split to use (class-balanced, seeded subset, the "
        "same for every encoder), e.g. 0.01,0.1. Default: all labels for linear / knn, "
        "0.01,0.1 for finetune.")
    finetune_steps: int = flag(0, "Steps of each fine-tuning (pretrained and scratch alike); 0: "
                               "the recipe's max(200, 30 epochs of the labelled subset).")
    output_dir: Optional[str] = flag(None, "Where eval_<protocol>.json goes (default: the "
                                     "model_dir, or the encoder's folder).")
    baseline: Optional[str] = flag(None, "Evaluate a baseline instead of a trained encoder "
                                   "(needs --backbone, --image_size, --output_dir).", BASELINES)
    backbone: Optional[str] = flag(None, "Backbone of a baseline.")
    image_size: Optional[int] = flag(None, "Baseline input size; for an encoder, a check.")
    width: float = flag(1.0, "Baseline width multiplier.")
    supervised_epochs: int = flag(0, "Supervised baseline epochs (an upper bound when "
                                  "--supervised_minutes is set).")
    supervised_minutes: float = flag(0.0, "Supervised baseline time budget in minutes.")
    supervised_batch_size: int = flag(64, "Supervised baseline batch size.")
    seed: int = flag(0, "Seed for baselines and the linear probe.")
    bn_recalibration_images: Optional[int] = flag(
        None, "Re-estimate every encoder's batch-norm statistics on this many train images "
        "before extracting features (0: evaluate every encoder as it is). Default, the "
        "protocol: a train.py encoder (statistics already re-estimated on plain views) as it "
        "is, random-init and supervised baselines re-estimated on 2,560 images.")

    HELP_GROUPS = {
        "What to evaluate": ("model_dir", "encoder", "baseline", "backbone", "image_size",
                             "width"),
        "Labelled data": ("dataset", "data_dir", "tfds_data_dir", "tfds_manual_dir"),
        "Protocol": ("protocol", "label_fraction", "finetune_steps", "output_dir", "seed",
                     "bn_recalibration_images"),
        "Supervised baseline": ("supervised_epochs", "supervised_minutes",
                                "supervised_batch_size"),
    }

    def validate(self):
        unknown = [p for p in self.protocol if p not in PROTOCOLS]
        check([(not unknown, f"--protocol must be among {', '.join(PROTOCOLS)}, got "
                             f"{unknown[0]!r}" if unknown else ""),
               (self.finetune_steps >= 0, "--finetune_steps must be >= 0 (0: the recipe)"),
               (self.bn_recalibration_images is None or self.bn_recalibration_images >= 0,
                "--bn_recalibration_images must be >= 0"),
               (all(0 < f <= 1 for f in self.label_fraction or ()),
                "--label_fraction values must be in (0, 1] (0.1 = 10% of the labels)")])
        if self.baseline:
            missing = [f"--{n}" for n in ("backbone", "image_size", "output_dir")
                       if not getattr(self, n)]
            check([(not missing, f"--baseline={self.baseline} needs {', '.join(missing)}")])
            check_backbone(self.backbone, self.width)
        else:
            check([(bool(self.model_dir or self.encoder),
                    "pass --model_dir=DIR (a train.py run), --encoder=PATH, or --baseline")])
        return self

    def supervised_asked(self):
        return bool(self.supervised_epochs or self.supervised_minutes)
