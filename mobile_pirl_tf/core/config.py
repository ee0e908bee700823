"""The configurations of the command-line tools, free of TensorFlow.

Each tool's settings are one dataclass whose fields carry their flag's help text (`flag`);
`cli.define_flags` turns a dataclass into absl flags and `cli.config_from_flags` reads them
back, so a setting is defined once, with its default, help and validation. Nothing here
imports TensorFlow: `--help` and a bad flag answer at once.

The names the configurations accept (backbones, transformations, losses, heads, export variants)
live here too, so that validating a configuration needs no model code; the modules that build
the things check that their builders match these names.
"""

import dataclasses
from typing import Optional

from mobile_pirl_tf.core.errors import UsageError


def flag(default, help, choices=None):  # noqa: A002 - reads like absl's DEFINE_*(name, default, help)
    """A dataclass field with its command-line help (and, for an enum, its choices)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def check(checks):
    """Raises the UsageError of the first (ok, message) pair whose ok is false."""
    for ok, message in checks:
        if not ok:
            raise UsageError(message)


# --- names ---------------------------------------------------------------------------------

# backbone -> has a width multiplier (alpha)
BACKBONE_WIDTHS = {
    "resnet50": False, "mobilenetv2": True, "mobilenetv3small": True, "mobilenetv3large": True,
    "efficientnetb0": False, "efficientnetlite0": True, "mnasnet_a1": True, "mnasnet_b1": True,
}
TRANSFORM_NAMES = ("jigsaw", "rotation", "crop", "cutout", "color", "sobel", "noise", "blur",
                   "flip")
MAX_COMPOSED = 3
MAX_IMAGE_SIZE = 1024  # a batch of 64 views is 0.8 GB of float32 pixels at this size
HEAD_KINDS = ("linear", "mlp")
LOSSES = ("nce", "infonce")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
VARIANTS = ("float32", "float16", "dynamic", "int8", "qat_int8")
PHOTOMETRIC_KINDS = ("vissl", "one_of")
MIXED_PRECISION = ("none", "float16", "bfloat16")
INT8_IO = ("uint8", "int8")


def check_backbone(name, width=1.0):
    """Raises a one-line `UsageError` for an unknown backbone or a width it cannot take."""
    if name not in BACKBONE_WIDTHS:
        raise UsageError(f"unknown --backbone={name!r}; valid values: "
                         f"{', '.join(sorted(BACKBONE_WIDTHS))}")
    if width <= 0:
        raise UsageError(f"--width must be positive, got {width}")
    if width != 1.0 and not BACKBONE_WIDTHS[name]:
        with_width = sorted(n for n, has in BACKBONE_WIDTHS.items() if has)
        raise UsageError(f"--backbone={name} has no width multiplier; use --width=1.0 or one of "
                         f"{', '.join(with_width)}")


def parse_transforms(spec):
    """'jigsaw+rotation' -> ('jigsaw', 'rotation'); a one-line UsageError for a bad spec."""
    names = tuple(n.strip() for n in str(spec).split("+"))
    unknown = [n for n in names if n not in TRANSFORM_NAMES]
    if unknown:
        raise UsageError(f"unknown transform {unknown[0]!r} in --transforms={spec}; valid: "
                         f"{', '.join(TRANSFORM_NAMES)} (compose up to {MAX_COMPOSED} with '+')")
    if len(names) > MAX_COMPOSED:
        raise UsageError(f"--transforms={spec} composes {len(names)}; at most {MAX_COMPOSED}")
    if len(set(names)) != len(names):
        raise UsageError(f"--transforms={spec} repeats a transform; each may appear once")
    return names


def transformed_kind(spec):
    """What the transformed view ends in: "patches" when it contains jigsaw (9 patches through
    head g), else "image" (one image through head f_t); `spec` is a --transforms string or the
    tuple of names."""
    names = parse_transforms(spec) if isinstance(spec, str) else spec
    return "patches" if "jigsaw" in names else "image"


# --- shared groups ---------------------------------------------------------------------------

@dataclasses.dataclass
class DataConfig:
    """Where unlabelled images come from: a folder, or a TFDS data set (downloaded and prepared
    on first use)."""
    dataset: str = flag("stl10", "TFDS name, downloaded and prepared on first use (stl10: its "
                        "100,000-image unlabelled split, 2.46 GiB; also cifar10, "
                        "imagenette/160px-v2, imagenet2012 with --tfds_manual_dir).")
    data_dir: Optional[str] = flag(None, "A folder of images (any nesting; labels ignored); "
                                   "overrides --dataset.")
    tfds_data_dir: Optional[str] = flag(None, "Where TFDS data sets are prepared (default: "
                                        "~/tensorflow_datasets).")
    tfds_manual_dir: Optional[str] = flag(None, "Manual download folder (imagenet2012: "
                                          "ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar).")


@dataclasses.dataclass(frozen=True)
class TransformParams:
    """Strengths of the transformations (and of the image view's crop, `view_min_scale`)."""
    view_min_scale: float = flag(0.08, "Image view v_I: smallest area fraction of its "
                                 "random-resized crop (PIRL/VISSL: 0.08; larger is weaker).")
    crop_min_scale: float = flag(0.08, "crop: smallest area fraction.")
    cutout_size: float = flag(0.5, "cutout: square side as a fraction of the image side.")
    color_strength: float = flag(1.0, "color: SimCLR colour distortion strength s.")
    noise_std: float = flag(0.1, "noise: Gaussian std on [0, 1] pixels.")
    blur_p: float = flag(0.5, "blur: probability of blurring.")
    blur_sigma_max: float = flag(2.0, "blur: largest sigma at 224 px (scaled with the image "
                                 "size).")
    photometric: str = flag("one_of", "The random photometric step of the views' augmentation: "
                            "one_of (with p=0.66 one of posterize, sharpness, solarize, "
                            "autocontrast, fixed strengths; learns better at equal epochs) or "
                            "vissl (PIRL's: all four in sequence, random strengths).",
                            PHOTOMETRIC_KINDS)

    def validate(self):
        check([(0 < self.view_min_scale <= 1, "--view_min_scale must be in (0, 1]"),
               (0 < self.crop_min_scale <= 1, "--crop_min_scale must be in (0, 1]"),
               (0 < self.cutout_size <= 1, "--cutout_size must be in (0, 1]"),
               (self.color_strength >= 0, "--color_strength must be >= 0"),
               (self.noise_std >= 0, "--noise_std must be >= 0"),
               (0 <= self.blur_p <= 1, "--blur_p must be in [0, 1]"),
               (self.blur_sigma_max >= 0.1, "--blur_sigma_max must be >= 0.1"),
               (self.photometric in PHOTOMETRIC_KINDS,
                f"--photometric must be one of {', '.join(PHOTOMETRIC_KINDS)}")])
        return self


def _same_as(cls, name):
    """A new field with the default and help of `cls`'s field `name` (a flag shared by two
    configurations)."""
    field = cls.__dataclass_fields__[name]
    return flag(field.default, field.metadata["help"], field.metadata["choices"])


# --- train.py --------------------------------------------------------------------------------

@dataclasses.dataclass
class TrainConfig(DataConfig):
    """PIRL pretraining (`python train.py`): `training.train(config)`."""
    backbone: str = flag("efficientnetb0", ", ".join(BACKBONE_WIDTHS) + ".")
    image_size: int = flag(224, "Side of the image view in pixels; jigsaw geometry scales from "
                           "the paper's 224/255/85/64.")
    width: float = flag(1.0, "Width multiplier (alpha) of MobileNetV2/V3, EfficientNet-Lite0, "
                        "MnasNet.")
    transforms: str = flag("jigsaw", "The transformed view v_I^t: one of "
                           + ", ".join(TRANSFORM_NAMES) + ", or up to three joined by '+' and "
                           "applied in order (jigsaw+rotation: the paper's PIRL "
                           "Jigsaw+Rotation).")
    view_min_scale: float = _same_as(TransformParams, "view_min_scale")
    crop_min_scale: float = _same_as(TransformParams, "crop_min_scale")
    cutout_size: float = _same_as(TransformParams, "cutout_size")
    color_strength: float = _same_as(TransformParams, "color_strength")
    noise_std: float = _same_as(TransformParams, "noise_std")
    blur_p: float = _same_as(TransformParams, "blur_p")
    blur_sigma_max: float = _same_as(TransformParams, "blur_sigma_max")
    photometric: str = _same_as(TransformParams, "photometric")
    head: str = flag("linear", "Projection heads f and g.", HEAD_KINDS)
    embedding_dim: int = flag(128, "Embedding / memory-bank dimension.")
    recipe: str = flag("default", "default: the best recipe measured (RESULTS.md); paper: the "
                       "PIRL paper's (NCE, tau 0.07, 32,000 per-example negatives, LR 0.03 per "
                       "256, batch 256, VISSL's photometric step). A flag given explicitly "
                       "overrides the recipe.",
                       ("default", "paper"))
    loss: str = flag("infonce", "InfoNCE (default) or NCE (the paper).", LOSSES)
    num_negatives: int = flag(4096, "Negatives per term, capped by the data set size minus one.")
    shared_negatives: bool = flag(True, "Draw one set of negatives per batch (a matmul) instead "
                                  "of one per example (the paper; a gather of B x K rows).")
    temperature: float = flag(0.2, "tau in s(u, v) = cos(u, v) / tau.")
    pirl_lambda: float = flag(0.5, "Weight of the transformed-view term (Eq. 5).")
    bank_momentum: float = flag(0.5, "m <- normalize(b m + (1 - b) f(v_I)).")
    epochs: int = flag(200, "Total epochs (a rerun resumes up to this).")
    schedule_epochs: Optional[int] = flag(None, "Length of the cosine learning-rate schedule in "
                                          "epochs (default: --epochs). Set it above --epochs to "
                                          "stop early on a longer run's schedule (the study's "
                                          "successive halving does).")
    batch_size: int = flag(64, "Global batch size (over all replicas).")
    steps_per_epoch: Optional[int] = flag(None, "Optional cap on steps per epoch.")
    learning_rate: float = flag(0.06, "SGD learning rate per 256 images (scaled by batch_size / "
                                "256), cosine decay to 1/1000.")
    momentum: float = flag(0.9, "SGD momentum.")
    weight_decay: float = flag(1e-4, "L2 on kernels (not batch-norm or bias).")
    seed: int = flag(0, "Seed for initialisation, views and negatives.")
    model_dir: str = flag("runs/pirl", "Run folder: checkpoints, logs, encoder.keras.")
    strategy: str = flag("default", "tf.distribute strategy: one device, every GPU of this "
                         "machine, several machines (cluster from TF_CONFIG; BUILD.md), or a "
                         "TPU.", STRATEGIES)
    tpu: str = flag("", "With --strategy=tpu: the TPU's name or grpc:// address (empty: the "
                    "environment's, as on a TPU VM).")
    steps_per_execution: int = flag(1, "Training steps per call into the compiled step (the "
                                    "host is visited once per call: raise it on TPUs); the "
                                    "progress and the loss check then see every N-th step.")
    monitor_data_dir: Optional[str] = flag(None, "Labelled folder (train/<class>/, "
                                           "test/<class>/) for a kNN probe during training, "
                                           "logged as knn_top1.")
    monitor_every: int = flag(1, "Run the kNN probe every N epochs.")
    verbose: Optional[int] = flag(None, "Keras progress output: 0 silent, 1 bar, 2 a line per "
                                  "epoch (default: a bar on a terminal, else lines).")
    bn_recalibration_images: int = flag(2560, "At the end of training, re-estimate the "
                                        "encoder's batch-norm statistics on this many training "
                                        "images (centre crops, as the encoder sees them at "
                                        "inference); 0 keeps the statistics of training (mixed "
                                        "from image views and jigsaw patches).")
    cache_images: bool = flag(True, "Decode the training images once and keep them in memory "
                              "when they take at most 2 GiB decoded (a folder of images); the "
                              "views are the same either way.")
    mixed_precision: str = flag("none", "Train the backbone in mixed float16 (GPUs; with loss "
                                "scaling) or bfloat16 (TPUs, recent GPUs); heads, bank, logits "
                                "and loss stay float32 and the encoder is written in float32. "
                                "Slower on CPUs (BUILD.md).", MIXED_PRECISION)

    # The settings `--recipe` names (fields given explicitly keep their value).
    RECIPES = {
        "default": {},
        "paper": {"loss": "nce", "temperature": 0.07, "num_negatives": 32000,
                  "shared_negatives": False, "learning_rate": 0.03, "batch_size": 256,
                  "photometric": "vissl"},
    }

    # Fields that may change between a run and its resumption.
    # The learning rate may change on resume (after a divergence): run.json records it. The
    # strategy may too (the global batch, hence the training, is the same on any number of
    # replicas, up to batch-norm statistics being per replica).
    RESUMABLE = ("epochs", "model_dir", "verbose", "monitor_data_dir", "monitor_every",
                 "learning_rate", "strategy", "tpu", "steps_per_execution",
                 "bn_recalibration_images", "cache_images")
    HELP_GROUPS = {
        "Data": ("dataset", "data_dir", "tfds_data_dir", "tfds_manual_dir"),
        "Model": ("backbone", "image_size", "width", "head", "embedding_dim"),
        "Pretext transformations": ("transforms",) + tuple(
            f.name for f in dataclasses.fields(TransformParams)),
        "Memory bank and loss": ("recipe", "loss", "num_negatives", "shared_negatives",
                                 "temperature", "pirl_lambda", "bank_momentum"),
        "Optimisation": ("epochs", "schedule_epochs", "batch_size", "steps_per_epoch",
                         "learning_rate", "momentum",
                         "weight_decay", "seed", "mixed_precision"),
        "Run": ("model_dir", "strategy", "tpu", "steps_per_execution", "monitor_data_dir",
                "monitor_every", "verbose", "bn_recalibration_images", "cache_images"),
    }

    def validate(self):
        check_backbone(self.backbone, self.width)
        self.transform_names()
        self.transform_params().validate()
        check([
            (self.head in HEAD_KINDS, f"--head must be one of {', '.join(HEAD_KINDS)}"),
            (self.loss in LOSSES, f"--loss must be one of {', '.join(LOSSES)}"),
            (self.strategy in STRATEGIES, f"--strategy must be one of {', '.join(STRATEGIES)}"),
            (32 <= self.image_size <= MAX_IMAGE_SIZE,
             f"--image_size must be in [32, {MAX_IMAGE_SIZE}], got {self.image_size}"),
            (self.batch_size >= 1, f"--batch_size must be positive, got {self.batch_size}"),
            (self.epochs >= 1, f"--epochs must be positive, got {self.epochs}"),
            (self.steps_per_execution >= 1, "--steps_per_execution must be positive"),
            (self.schedule_epochs is None or self.schedule_epochs >= self.epochs,
             "--schedule_epochs must be at least --epochs"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1,
             "--steps_per_epoch must be positive"),
            (self.num_negatives >= 1, "--num_negatives must be positive"),
            (self.temperature > 0, "--temperature must be positive"),
            (0 <= self.pirl_lambda <= 1, "--pirl_lambda must be in [0, 1]"),
            (0 <= self.bank_momentum < 1, "--bank_momentum must be in [0, 1)"),
            (self.learning_rate > 0, "--learning_rate must be positive"),
            (self.embedding_dim >= 1, "--embedding_dim must be positive"),
            (self.recipe in self.RECIPES, f"--recipe must be one of {', '.join(self.RECIPES)}"),
            (self.bn_recalibration_images >= 0, "--bn_recalibration_images must be >= 0"),
            (self.mixed_precision in MIXED_PRECISION,
             f"--mixed_precision must be one of {', '.join(MIXED_PRECISION)}"),
        ])
        return self

    @classmethod
    def from_recipe(cls, recipe="default", **fields):
        """The configuration of a named recipe (`RECIPES`), with `fields` overriding it."""
        if recipe not in cls.RECIPES:
            raise UsageError(f"--recipe must be one of {', '.join(cls.RECIPES)}, got {recipe!r}")
        return cls(**{**cls.RECIPES[recipe], "recipe": recipe, **fields})

    def transform_names(self):
        return parse_transforms(self.transforms)

    def transform_params(self):
        return TransformParams(**{f.name: getattr(self, f.name)
                                  for f in dataclasses.fields(TransformParams)})

    def transformed_kind(self):
        return transformed_kind(self.transform_names())

    def lr_for_batch(self):
        """The linear scaling rule of the recipe: learning_rate per 256 images."""
        return self.learning_rate * self.batch_size / 256
