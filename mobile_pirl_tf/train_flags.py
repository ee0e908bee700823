"""The training flags (absl), shared by `train.py` and `python -m mobile_pirl_tf.sweep`.

`define_flags()` defines one flag per `TrainConfig` field (minus `exclude`), with the config's
defaults; `config_from_flags()` reads them back into a `TrainConfig`.
"""

import dataclasses

from absl import flags

from mobile_pirl_tf import backbones, transforms
from mobile_pirl_tf.training import TrainConfig

# name -> (kind, help[, enum values]); defaults come from TrainConfig.
FLAG_HELP = {
    "backbone": ("string", ", ".join(backbones.BACKBONES) + "."),
    "image_size": ("integer", "Side of the image view in pixels; jigsaw geometry scales from "
                   "the paper's 224/255/85/64."),
    "width": ("float", "Width multiplier (alpha) of MobileNetV2/V3, EfficientNet-Lite0, MnasNet."),
    "transforms": ("string", "The transformed view v_I^t: one of " + ", ".join(transforms.NAMES)
                   + ", or up to three joined by '+' and applied in order (jigsaw+rotation: "
                   "the paper's PIRL Jigsaw+Rotation)."),
    "view_min_scale": ("float", "Image view v_I: smallest area fraction of its random-resized "
                       "crop (PIRL/VISSL: 0.08; larger is a weaker augmentation)."),
    "crop_min_scale": ("float", "crop: smallest area fraction."),
    "cutout_size": ("float", "cutout: square side as a fraction of the image side."),
    "color_strength": ("float", "color: SimCLR colour distortion strength s."),
    "noise_std": ("float", "noise: Gaussian std on [0, 1] pixels."),
    "blur_p": ("float", "blur: probability of blurring."),
    "blur_sigma_max": ("float", "blur: largest sigma at 224 px (scaled with the image size)."),
    "head": ("enum", "Projection heads f and g.", ["linear", "mlp"]),
    "embedding_dim": ("integer", "Embedding / memory-bank dimension."),
    "loss": ("enum", "NCE (the paper) or InfoNCE.", ["nce", "infonce"]),
    "num_negatives": ("integer", "Negatives per term, capped by the data set size minus one."),
    "shared_negatives": ("bool", "Draw one set of negatives per batch (a matmul) instead of one "
                         "per example (the paper; a gather of B x K rows)."),
    "temperature": ("float", "tau in s(u, v) = cos(u, v) / tau."),
    "pirl_lambda": ("float", "Weight of the transformed-view term (Eq. 5)."),
    "bank_momentum": ("float", "m <- normalize(b m + (1 - b) f(v_I))."),
    "epochs": ("integer", "Total epochs (a rerun resumes up to this)."),
    "batch_size": ("integer", "Global batch size (over all replicas)."),
    "steps_per_epoch": ("integer", "Optional cap on steps per epoch."),
    "learning_rate": ("float", "SGD learning rate per 256 images (scaled by batch_size / 256), "
                      "cosine decay to 1/1000."),
    "momentum": ("float", "SGD momentum."),
    "weight_decay": ("float", "L2 on kernels (not batch-norm or bias)."),
    "seed": ("integer", "Seed for initialisation, views and negatives."),
    "dataset": ("string", "TFDS name (stl10 uses its unlabelled split; also cifar10, "
                "imagenette/160px-v2, imagenet2012 with --tfds_manual_dir)."),
    "data_dir": ("string", "A folder of images (any nesting; labels ignored); overrides --dataset."),
    "tfds_data_dir": ("string", "Where prepared TFDS data sets are."),
    "tfds_manual_dir": ("string", "Manual download folder (imagenet2012)."),
    "model_dir": ("string", "Run folder: checkpoints, logs, encoder.keras."),
    "monitor_data_dir": ("string", "Labelled folder (train/<class>/, test/<class>/) for a kNN "
                         "probe during training, logged as knn_top1."),
    "monitor_every": ("integer", "Run the kNN probe every N epochs."),
    "strategy": ("enum", "tf.distribute strategy.", ["default", "mirrored"]),
}


def define_flags(exclude=()):
    """Defines the training flags, except the names in `exclude`."""
    defaults = TrainConfig()
    for name, (kind, help_text, *enum) in FLAG_HELP.items():
        if name in exclude:
            continue
        default = getattr(defaults, name)
        if kind == "enum":
            flags.DEFINE_enum(name, default, enum[0], help_text)
        else:
            getattr(flags, f"DEFINE_{kind}")(name, default, help_text)


def config_from_flags(**overrides):
    """The TrainConfig of the parsed flags (fields without a flag keep their defaults)."""
    values = {f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(TrainConfig)
              if f.name in flags.FLAGS}
    return TrainConfig(**{**values, **overrides})
