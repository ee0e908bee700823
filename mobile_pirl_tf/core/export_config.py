"""The settings of `python export/to_tflite.py` (free of TensorFlow, like `config`): one
dataclass whose fields generate the tool's flags (`cli.define_flags`)."""

import dataclasses
from typing import Optional, Tuple

from mobile_pirl_tf.core.config import (
    INT8_IO,
    VARIANTS,
    DataConfig,
    check,
    check_backbone,
    flag,
)

# QAT distillation defaults (docs/notes/int8-accuracy.md: 4,096 extra images x 5 epochs, Adam
# 1e-4 on a cosine, is the recipe that brings the SE / hard-swish backbones within 1 point).
QAT_IMAGES, QAT_EPOCHS, QAT_LEARNING_RATE = 4096, 5, 1e-4


@dataclasses.dataclass
class ExportConfig(DataConfig):
    """Export of an encoder to LiteRT (`python export/to_tflite.py`): `deploy.export_encoder`.

    The data fields (images for int8 calibration, QAT and the agreement check) default to the
    run's own when a --model_dir is given (`with_run_defaults`).
    """
    dataset: Optional[str] = flag(None, "TFDS data set for calibration, QAT and agreement "
                                  "images (default: the run's).")
    data_dir: Optional[str] = flag(None, "Images for calibration, QAT and agreement (default: "
                                   "the run's --data_dir / --dataset).")
    model_dir: Optional[str] = flag(None, "A train.py run folder (holds encoder.keras, "
                                    "config.json).")
    encoder: Optional[str] = flag(None, "An encoder .keras file (instead of --model_dir).")
    backbone: Optional[str] = flag(None, "Backbone of the encoder (default: from config.json); "
                                   "needed by qat_int8.")
    width: Optional[float] = flag(None, "Width multiplier of the backbone (default: config.json "
                                  "or 1).")
    variants: Tuple[str, ...] = flag(VARIANTS, "Variants to write: " + ", ".join(VARIANTS) + ".")
    output_dir: Optional[str] = flag(None, "Where the .tflite files and report.json go (default: "
                                     "export/ beside the encoder).")
    overwrite: bool = flag(False, "Replace .tflite files / report.json already there.")
    calibration_images: int = flag(256, "int8 calibration (and QAT) images (>= 200).")
    agreement_images: int = flag(100, "Held-out images for the agreement check.")
    int8_io: str = flag("uint8", "Input/output type of the int8 files.", INT8_IO)
    qat_images: int = flag(QAT_IMAGES, "Unlabelled images for QAT's feature distillation "
                           "(besides the calibration images; disjoint from the agreement "
                           "images).")
    qat_epochs: int = flag(QAT_EPOCHS, "Feature-distillation epochs of quantization-aware "
                           "training; 0 converts the fake-quantized model with its calibrated "
                           "ranges and no fine-tuning.")
    qat_learning_rate: float = flag(QAT_LEARNING_RATE, "Adam learning rate of QAT "
                                    "(cosine-decayed to 0).")
    eval_data_dir: Optional[str] = flag(None, "Labelled folder (train/, test/) for the linear "
                                        "probe on each variant's features (optional).")
    latency_runs: int = flag(50, "Timed invokes per thread count (after warm-up).")
    threads: Tuple[int, ...] = flag((1, 2), "LiteRT thread counts to time.")
    seed: int = flag(0, "Seed of the image samples and QAT.")
    recalibrate_bn_images: int = flag(0, "First re-estimate the encoder's batch-norm statistics "
                                      "on this many images of the data flags (the encoder file "
                                      "is not changed); for a short run whose statistics have "
                                      "not settled.")

    HELP_GROUPS = {
        "Encoder": ("model_dir", "encoder", "backbone", "width", "recalibrate_bn_images"),
        "Output": ("variants", "output_dir", "overwrite", "int8_io"),
        "Images (calibration, QAT, agreement)": ("dataset", "data_dir", "tfds_data_dir",
                                                 "tfds_manual_dir", "calibration_images",
                                                 "agreement_images", "seed"),
        "Quantization-aware training": ("qat_images", "qat_epochs", "qat_learning_rate"),
        "Report": ("eval_data_dir", "latency_runs", "threads"),
    }

    def validate(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        check([
            (bool(self.model_dir or self.encoder),
             "pass --model_dir=RUN (a train.py run) or --encoder=PATH/encoder.keras"),
            (not unknown, f"unknown --variants value {unknown[0]!r}; valid: {', '.join(VARIANTS)}"
             if unknown else ""),
            (self.int8_io in INT8_IO, f"--int8_io must be one of {', '.join(INT8_IO)}"),
            (self.qat_epochs >= 0, "--qat_epochs must be >= 0"),
            (self.qat_images >= 0, "--qat_images must be >= 0"),
            (self.calibration_images >= 1, "--calibration_images must be positive"),
            (self.agreement_images >= 1, "--agreement_images must be positive"),
            (self.latency_runs >= 1, "--latency_runs must be positive"),
            (all(t >= 1 for t in self.threads), "--threads must be positive integers"),
            (self.qat_learning_rate > 0, "--qat_learning_rate must be positive"),
            (self.recalibrate_bn_images >= 0, "--recalibrate_bn_images must be >= 0"),
        ])
        if self.backbone:
            check_backbone(self.backbone, self.width or 1.0)
        return self

    def with_run_defaults(self, run_config):
        """This configuration with the backbone, width and data flags it leaves unset taken from
        a train.py run's config.json (a dict; empty when there is none)."""
        data_dir = self.data_dir or (None if self.dataset else run_config.get("data_dir"))
        return dataclasses.replace(
            self, backbone=self.backbone or run_config.get("backbone"),
            width=self.width or run_config.get("width", 1.0), data_dir=data_dir,
            dataset=self.dataset or run_config.get("dataset", "stl10"),
            tfds_data_dir=self.tfds_data_dir or run_config.get("tfds_data_dir"))
