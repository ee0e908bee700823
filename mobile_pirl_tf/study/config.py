"""The study's settings (`python -m mobile_pirl_tf.study`): one dataclass whose fields generate
the flags (`core.cli.define_flags`), like `TrainConfig`; the library takes a `StudyConfig`,
never the flags. Training flags (`--batch_size`, `--image_size`, `--recipe`, ...) are
train.py's and travel in the `TrainConfig` beside it."""

import dataclasses
from typing import Optional, Tuple

from mobile_pirl_tf.core.config import (
    BACKBONE_WIDTHS,
    check,
    check_backbone,
    flag,
    parse_transforms,
)
from mobile_pirl_tf.core.errors import UsageError

REFERENCE_BACKBONE = "resnet50"
MOBILE_BACKBONES = tuple(b for b in BACKBONE_WIDTHS if b != REFERENCE_BACKBONE)
DEFAULT_TRANSFORMS = ("jigsaw", "rotation", "crop", "cutout", "color", "sobel", "noise", "blur")


@dataclasses.dataclass
class StudyConfig:
    """Experiments A-D: which cells, how long, how many seeds, which tests, what budget."""
    backbones: Tuple[str, ...] = flag(
        ("mobilenetv3small", "mobilenetv2", "mobilenetv3large", "mnasnet_a1", "efficientnetb0",
         "efficientnetlite0"),
        "Mobile backbones of stages A (with jigsaw) and C (with stage B's best combination).")
    reference_backbone: str = flag(REFERENCE_BACKBONE, "The paper's backbone, trained once "
                                   "(seed 1) at --reference_epochs as a measured reference, "
                                   "not a competing arm; empty: none.")
    reference_epochs: Optional[int] = flag(None, "Length of the reference run (default: "
                                           "--epochs).")
    transforms: Tuple[str, ...] = flag(DEFAULT_TRANSFORMS, "Transformations of stage B: every "
                                       "single one and every pair is screened.")
    triples: int = flag(0, "Stage B also screens the N best pairs extended by each of the "
                        "three best singles (0: no triples).")
    study_backbone: Optional[str] = flag(None, "Backbone of stage B (default: stage A's best).")
    epochs: int = flag(6, "Length of every scored run (screen and confirmation), each on its "
                       "own completed cosine schedule; docs/study/README.md says why 6 "
                       "epochs at 64 px.")
    pilot_epochs: int = flag(3, "Half length for the rank check: the --pilot_cells first "
                             "screen cells also run this long, and the ranks are compared "
                             "(Kendall tau; 0: no check).")
    pilot_cells: int = flag(5, "How many screen cells the rank check reruns at "
                            "--pilot_epochs.")
    long_epochs: int = flag(0, "Longer length at which stage B's confirmed arms are rerun "
                            "(seed 1) once everything else is done and the budget allows, to "
                            "see whether their order holds (0: no check).")
    confirm: int = flag(2, "Stage B: how many of the screen's best cells are confirmed (jigsaw, "
                        "the paper's pretext, is always confirmed beside them).")
    seeds: int = flag(5, "Seeds of every confirmed arm (1..N; seed 0 screens and is never used "
                       "to score a selected cell).")
    max_seeds: int = flag(8, "While budget remains, inconclusive comparisons get more seeds, "
                          "up to this many.")
    top_k: int = flag(1, "Stage B's best combinations trained on every mobile backbone in C.")
    alpha: float = flag(0.05, "Family-wise error of each stage's comparisons (Holm).")
    equivalence_margin: float = flag(2.0, "Two arms are called equivalent when the difference "
                                     "is shown within +- this many points (TOST).")
    budget_hours: float = flag(0.0, "Hours of compute this invocation may use, calibration "
                               "included; it stops before running past them with a partial "
                               "report, and a rerun continues (0: no limit).")
    eval_data_dir: Optional[str] = flag(None, "Labelled folder with train/<class>/ and "
                                        "test/<class>/ (or val/) for the probes.")
    eval_train_images: int = flag(0, "Class-balanced subset of the labelled train split for "
                                  "the probes (0: all).")
    eval_test_images: int = flag(0, "Class-balanced subset of the test split (0: all).")
    output_dir: str = flag("runs/study", "Records (one JSON per run), REPORT.md, results.csv, "
                           "figures, costs.json: small files to keep.")
    runs_dir: Optional[str] = flag(None, "Run folders (checkpoints, encoders): large, not "
                                   "needed once a run is scored (default: <output_dir>/runs).")
    keep_checkpoints: bool = flag(False, "Keep each scored run's checkpoints.")
    storage: Optional[str] = flag(None, "Optuna storage URL (default: sqlite:///<runs_dir>/"
                                  "study.db; an RDB URL lets several machines share a study).")
    dry_run: bool = flag(False, "Print the plan from the measured (or default) costs and stop; "
                         "nothing is trained.")
    calibrate: bool = flag(False, "Measure the costs on this machine (costs.json), print the "
                           "plan and stop.")
    phone_results: Tuple[str, ...] = flag((), "JSON files of export/benchmark_phone.py for "
                                          "phone latency in stage D.")

    HELP_GROUPS = {
        "Cells": ("backbones", "reference_backbone", "reference_epochs", "transforms", "triples",
                  "study_backbone", "top_k"),
        "Length and seeds": ("epochs", "pilot_epochs", "pilot_cells", "long_epochs", "confirm",
                             "seeds", "max_seeds"),
        "Tests": ("alpha", "equivalence_margin"),
        "Run": ("budget_hours", "eval_data_dir", "eval_train_images", "eval_test_images",
                "output_dir", "runs_dir", "keep_checkpoints", "storage", "dry_run", "calibrate",
                "phone_results"),
    }

    def validate(self):
        for name in self.backbones:
            check_backbone(name)
        if self.reference_backbone:
            check_backbone(self.reference_backbone)
        if self.study_backbone:
            check_backbone(self.study_backbone)
        if not self.transforms:
            raise UsageError("--transforms is empty; stage B needs at least one transformation "
                             "(e.g. --transforms=jigsaw,crop,color)")
        for name in self.transforms:
            parse_transforms(name)
            if "+" in name:
                raise UsageError(f"--transforms lists single transformations; {name!r} is a "
                                 "composition (stage B screens every pair itself)")
        check([
            (bool(self.backbones), "--backbones is empty"),
            (len(set(self.transforms)) == len(self.transforms),
             "--transforms lists a transform twice"),
            (len(set(self.backbones)) == len(self.backbones), "--backbones lists one twice"),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (0 <= self.pilot_epochs < self.epochs, "--pilot_epochs must be in [0, --epochs)"),
            (self.long_epochs == 0 or self.long_epochs > self.epochs,
             "--long_epochs must be 0 or above --epochs"),
            (self.reference_epochs is None or self.reference_epochs >= 1,
             "--reference_epochs must be at least 1"),
            (self.seeds >= 2, "--seeds must be at least 2 (a paired interval needs two pairs)"),
            (self.max_seeds >= self.seeds, "--max_seeds must be at least --seeds"),
            (self.confirm >= 1, "--confirm must be at least 1"),
            (self.top_k >= 1, "--top_k must be at least 1"),
            (self.triples >= 0, "--triples must be >= 0"),
            (self.pilot_cells >= 0, "--pilot_cells must be >= 0"),
            (0 < self.alpha < 0.5, "--alpha must be in (0, 0.5)"),
            (self.equivalence_margin > 0, "--equivalence_margin must be positive (points)"),
            (self.budget_hours >= 0, "--budget_hours must be >= 0"),
            (bool(self.eval_data_dir), "--eval_data_dir is required: a folder with "
                                       "train/<class>/ and test/<class>/"),
        ])
        return self

    @property
    def margin(self):
        """The equivalence margin as a fraction (the probes' unit)."""
        return self.equivalence_margin / 100

    @property
    def confirmation_seeds(self):
        return list(range(1, self.seeds + 1))

    def runs_folder(self):
        import os

        return self.runs_dir or os.path.join(self.output_dir, "runs")

    def storage_url(self):
        import os

        if self.storage:
            return self.storage
        return f"sqlite:///{os.path.abspath(os.path.join(self.runs_folder(), 'study.db'))}"
