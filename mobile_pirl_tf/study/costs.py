"""What the study's runs cost, and the budget they are spent against.

`Costs` estimates the seconds of a run (training and the probes) from per-backbone figures:
the time of one PIRL step for each view kind (jigsaw patches or an image), the fixed cost of a
`train.py` call (building and tracing the model, re-estimating batch-norm statistics, writing
the encoder), and the probes' cost (a fixed part and a time per labelled image). They come from
`costs.json` when this machine measured them (`--calibrate`, or the first thing a real run
does), else from `DEFAULT_STEP_SECONDS`, measured on this project's 2-core Intel Xeon at 64 px
and batch 64 and scaled by pixels and batch (marked as defaults in the plan).

Once runs are recorded on this machine, their own times replace the calibrated step and probe
figures (`observe`: the median per backbone and view kind), so a plan made after a few runs
costs the rest at what runs of this study really take here (the input pipeline, the probes on
the full splits, whatever else shared the cores).

`Budget` is the hours of compute one invocation may use, counted from its start (calibration
included), stated the same way in the plan, the progress lines and the report.
"""

import dataclasses
import math
import os
import statistics
import time

from mobile_pirl_tf.core.progress import duration
from mobile_pirl_tf.core.records import DamagedRecord, read_json, set_aside, write_json
from mobile_pirl_tf.study.cells import Cell, clear_session, machine

# Seconds of one PIRL step (batch 64, 64 px) on 2 cores of an Intel Xeon (AVX-512 VNNI, AMX),
# measured with `measure_step_seconds` on 2026-12-04: (patches, image).
DEFAULT_STEP_SECONDS = {
    "mobilenetv3small": (0.353, 0.199), "mobilenetv3large": (0.969, 0.479),
    "mobilenetv2": (1.038, 0.553), "mnasnet_a1": (1.050, 0.615), "mnasnet_b1": (1.050, 0.615),
    "efficientnetlite0": (1.184, 0.642), "efficientnetb0": (1.596, 0.880),
    "resnet50": (3.953, 2.4),
}
DEFAULT_SETUP_SECONDS = 45.0    # a train.py call beside its steps (MobileNetV3-Small, 64 px)
DEFAULT_PROBE_SECONDS = 20.0    # the linear probe's 100 epochs and kNN on the features
# What a step fed by the real input pipeline takes beyond the step alone (decoding, views), at
# batch 64 and 64 px: measured 0.48 s against 0.353 s for MobileNetV3-Small with jigsaw, and
# 1.22 s against 1.04 s for MobileNetV2 (both share the 2 cores with the step): (patches, image).
PIPELINE_SECONDS = (0.13, 0.07)
CONVERSION_SECONDS = 40.0       # stage D: float32 and int8 conversion and timing, a backbone


class OutOfBudget(Exception):
    """The next piece of work would run past --budget_hours."""


class Budget:
    """--budget_hours of compute for this invocation, from its start (0: unlimited)."""

    def __init__(self, hours):
        self.hours = hours
        self.seconds = hours * 3600 if hours else math.inf
        self.started = time.time()

    def elapsed(self):
        return time.time() - self.started

    def left(self):
        return self.seconds - self.elapsed()

    def text(self):
        """"1h20m of 10h00m left" (or "no limit")."""
        if self.seconds == math.inf:
            return "no budget limit"
        return f"{duration(max(0.0, self.left()))} of {duration(self.seconds)} left"

    def check(self, estimate, what):
        if self.elapsed() + estimate > self.seconds:
            raise OutOfBudget(f"{what} (about {duration(estimate)}) would run past the budget "
                              f"({self.text()})")


@dataclasses.dataclass
class BackboneCost:
    step_patches: float
    step_image: float
    setup: float
    probe_setup: float
    image: float          # seconds per labelled image (features)
    measured: bool


class Costs:
    """Seconds of the study's runs on this machine (module docstring).

    Args:
      path: costs.json (measured figures are kept there, keyed by backbone, size and batch).
      base: the base `TrainConfig` (image size, batch size).
      steps_per_epoch: steps of one epoch of the pretraining data.
      eval_images: labelled images the probes extract features of (train + test).
    """

    def __init__(self, path, base, steps_per_epoch, eval_images):
        self.path, self.base = path, base
        self.steps_per_epoch, self.eval_images = steps_per_epoch, eval_images
        self.cpu = machine()
        self.step_seen = {}   # (backbone, view kind) -> [seconds of a step] recorded here
        self.probe_seen = {}  # backbone -> [seconds of its probes] recorded here
        try:
            self.table = read_json(path, {})
        except DamagedRecord as e:  # a cache: measured again
            print(f"warning: {e}; set aside as {set_aside(path)}, the costs are measured again")
            self.table = {}

    def key(self, backbone):
        """Figures are per machine (CPU model), backbone, image size and batch."""
        return f"{self.cpu}/{backbone}/{self.base.image_size}px/batch{self.base.batch_size}"

    def measured(self, backbone):
        return self.key(backbone) in self.table

    def of(self, backbone):
        """The `BackboneCost` of a backbone: measured here, else the scaled default."""
        if self.measured(backbone):
            return BackboneCost(**self.table[self.key(backbone)], measured=True)
        scale = (self.base.image_size / 64) ** 2 * self.base.batch_size / 64
        patches, image = DEFAULT_STEP_SECONDS.get(backbone, DEFAULT_STEP_SECONDS["efficientnetb0"])
        return BackboneCost(patches * scale, image * scale, DEFAULT_SETUP_SECONDS + 20 * patches,
                            DEFAULT_PROBE_SECONDS, 0.0008 + image * scale / 384, measured=False)

    def observe(self, cell: Cell, record):
        """Learns from a recorded run of this machine: its seconds a step (the run's training
        time less the fixed cost of a call, over its steps) and its probes' seconds."""
        if record.get("machine") != self.cpu or not record.get("train_seconds"):
            return
        steps = record["epochs"] * record.get("steps_per_epoch", self.steps_per_epoch)
        step = (record["train_seconds"] - self.of(cell.backbone).setup) / max(1, steps)
        self.step_seen.setdefault((cell.backbone, cell.kind), []).append(max(step, 0.0))
        self.probe_seen.setdefault(cell.backbone, []).append(record["probe_seconds"])

    def train_seconds(self, cell: Cell, epochs):
        c = self.of(cell.backbone)
        seen = self.step_seen.get((cell.backbone, cell.kind))
        if seen:
            step = statistics.median(seen)
        else:
            scale = (self.base.image_size / 64) ** 2 * self.base.batch_size / 64
            patches = cell.kind == "patches"
            step = (c.step_patches if patches else c.step_image) + scale * PIPELINE_SECONDS[
                0 if patches else 1]
        return c.setup + epochs * self.steps_per_epoch * step

    def probe_seconds(self, backbone):
        seen = self.probe_seen.get(backbone)
        if seen:
            return statistics.median(seen)
        c = self.of(backbone)
        return c.probe_setup + self.eval_images * c.image

    def run_seconds(self, cell: Cell, epochs):
        """Training and scoring one run of `cell`."""
        return self.train_seconds(cell, epochs) + self.probe_seconds(cell.backbone)

    def calibration_seconds(self, backbones):
        """What measuring the backbones not measured yet would take (about)."""
        return sum(2 * self.of(b).setup + 60 for b in backbones if not self.measured(b))

    def measure(self, backbone, scratch_dir, log=print):
        """Measures a backbone's figures on this machine (one two-step train.py call and one
        timed step per view kind) and keeps them in costs.json."""
        if self.measured(backbone):
            return self.of(backbone)
        log(f"  measuring {self.key(backbone)} ...")
        steps = {kind: measure_step_seconds(self.base, Cell(backbone, spec))
                 for kind, spec in (("patches", "jigsaw"), ("image", "crop"))}
        calls = measure_call_costs(self.base, Cell(backbone, "jigsaw"), scratch_dir,
                                   steps["patches"])
        self.table[self.key(backbone)] = {"step_patches": steps["patches"],
                                          "step_image": steps["image"], **calls}
        write_json(self.path, self.table)
        return self.of(backbone)


def measure_step_seconds(base, cell):
    """Seconds of one traced PIRL step of `cell` on a synthetic batch (median of three)."""
    import tensorflow as tf

    from mobile_pirl_tf.data import pipeline
    from mobile_pirl_tf.training import fit

    cfg = dataclasses.replace(base, backbone=cell.backbone, transforms=cell.transforms)
    model = fit.build_pirl(cfg, 10_000)
    fit.set_schedule(model, cfg, 1000)
    fit.build_variables(model, cfg)
    step = tf.function(model.train_step)
    batch = pipeline.synthetic_batch(base.batch_size, base.image_size, 10_000,
                                     names=cfg.transform_names())
    float(step(batch)["loss"])
    times = []
    for _ in range(3):
        started = time.perf_counter()
        float(step(batch)["loss"])
        times.append(time.perf_counter() - started)
    clear_session()
    return round(sorted(times)[1], 4)


def measure_call_costs(base, cell, scratch_dir, step_s):
    """The fixed cost of a train.py call (a two-step call less its two steps) and the probe's
    feature extraction: loading the saved encoder, then seconds per image."""
    import shutil

    import numpy as np

    from mobile_pirl_tf.models import backbones
    from mobile_pirl_tf.training import fit

    run_dir = os.path.join(scratch_dir, cell.backbone)
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = dataclasses.replace(base, backbone=cell.backbone, transforms=cell.transforms, epochs=1,
                              steps_per_epoch=2, model_dir=run_dir, verbose=0)
    started = time.perf_counter()
    fit.train(cfg)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    encoder, _ = backbones.load_encoder(encoder_path=os.path.join(run_dir, "encoder.keras"))
    images = np.random.default_rng(0).uniform(0, 255, (64, base.image_size, base.image_size, 3))
    encoder.predict_on_batch(images)
    load = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(3):
        encoder.predict_on_batch(images)
    image_s = (time.perf_counter() - started) / (3 * 64)
    shutil.rmtree(run_dir, ignore_errors=True)
    clear_session()
    return {"setup": round(max(0.0, seconds - 2 * step_s), 2),
            "probe_setup": round(load + DEFAULT_PROBE_SECONDS, 2),
            "image": round(image_s * 1.5, 6)}  # decoding and resizing beside the encoder
