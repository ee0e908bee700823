"""The end of a PIRL run: the deployable encoder and run.json.

`finish(run)` takes what training produced (a `TrainedRun`) and writes, in the run folder:

    encoder.keras   the backbone alone in float32, input [image_size, image_size, 3] pixels in
                    [0, 255], its batch-norm statistics re-estimated on centre crops of
                    `--bn_recalibration_images` training images (what is shipped is what is
                    evaluated), checked finite before it is written
    run.json        flags, epochs done, loss terms of every epoch over every invocation, wall
                    time, how the encoder's batch-norm statistics were set, learning-rate
                    changes made on resume
"""

import dataclasses
import logging
import os
import time
from typing import Any, Callable, Dict, Optional

import tensorflow as tf

from mobile_pirl_tf.core.config import TrainConfig
from mobile_pirl_tf.core.records import (
    DamagedRecord,
    atomic_path,
    read_json,
    set_aside,
    write_json,
)
from mobile_pirl_tf.data import sources
from mobile_pirl_tf.models import backbones, batchnorm
from mobile_pirl_tf.training import callbacks, cluster, run_folder

ENCODER_NAME, RUN_NAME, HISTORY_NAME = "encoder.keras", "run.json", "history.json"


@dataclasses.dataclass
class TrainedRun:
    """What one invocation of training produced, for `finish`.

    Attributes:
      config: the run's `TrainConfig`.
      source: the `data.sources.Source` it trained on.
      steps_per_epoch: steps of one epoch.
      started: `time.time()` when the invocation started.
      strategy: the `tf.distribute` strategy it trained under.
      model: the trained `models.pirl.PIRL`.
      epochs_done: epochs finished in all, this invocation included.
      initial_epoch: the epoch this invocation resumed from.
      history: {loss term: [value per epoch]} of the epochs this invocation trained.
      lr_change: {"from", "to"} when the learning rate changed on resume, else {}.
      backbone_fn: the backbone builder it trained with (tests), or None for `config.backbone`.
    """
    config: TrainConfig
    source: Any
    steps_per_epoch: int
    started: float
    strategy: Any
    model: Any
    epochs_done: int
    initial_epoch: int
    history: Dict[str, list]
    lr_change: Dict[str, float]
    backbone_fn: Optional[Callable] = None


def float32_encoder(model, config, backbone_fn=None, strategy=None):
    """The deployable encoder of a trained PIRL model, in float32 whatever the training policy
    (a float32 twin of the backbone with the trained weights, which are float32 variables; a
    twin outside the strategy too, after multi-worker or TPU training)."""
    backbone = model.backbone
    if config.mixed_precision != "none" or isinstance(strategy, cluster.PER_HOST_INPUT):
        backbone = backbone_fn() if backbone_fn else backbones.build_backbone(config.backbone,
                                                                            config.width)
        backbone.set_weights(model.backbone.get_weights())
    return backbones.build_encoder(backbone, config.image_size)


def check_encoder_finite(encoder, source, seed, images=8):
    """Raises FloatingPointError (nothing written) unless the encoder's state and its features
    of a few training images are all finite."""
    bad = callbacks.non_finite_variables(encoder.variables)
    if not bad:
        sample = sources.sample_images(source, images, int(encoder.input.shape[1]), seed)
        if len(sample) and not tf.reduce_all(tf.math.is_finite(encoder(sample))):
            bad = ["its features"]
    if bad:
        raise FloatingPointError(
            f"the trained encoder is not finite ({bad[0]}); {ENCODER_NAME} was not written; "
            "rerun with a lower --learning_rate (it may change on resume)")


def _read_record(path, lost):
    """The JSON record at path (None when absent); a damaged one is set aside as
    <path>.damaged with a warning saying what is lost (`lost`), and None returned."""
    try:
        return read_json(path)
    except DamagedRecord as e:
        logging.warning("%s; set aside as %s: %s", e, set_aside(path), lost)
        return None


def saved_history(model_dir):
    """The per-epoch history kept so far: history.json (written at every checkpoint), else an
    older run's run.json."""
    saved = _read_record(os.path.join(model_dir, HISTORY_NAME),
                         "earlier epochs' loss terms come from run.json where it has them")
    return saved if saved is not None else previous_run(model_dir).get("history", {})


def previous_run(model_dir):
    """The run.json of an earlier invocation ({} when there is none)."""
    return _read_record(os.path.join(model_dir, RUN_NAME),
                        "a new run.json is written (earlier learning-rate changes and wall "
                        "times it listed are lost)") or {}


def finish(run: TrainedRun):
    """Writes encoder.keras (statistics re-estimated, checked finite) and run.json.

    Returns:
      The run summary written to run.json (a dict: config, epochs_done, final and per-epoch
      loss terms, encoder path, ...).
    """
    config = run.config
    encoder = float32_encoder(run.model, config, run.backbone_fn, run.strategy)
    # What is shipped is what is evaluated: the statistics of plain views of training images,
    # not those of training (mixed from image views and jigsaw patches).
    bn_images = 0
    if config.bn_recalibration_images:
        crops = sources.sample_dataset(run.source, config.bn_recalibration_images,
                                       config.image_size, config.seed).batch(128)
        bn_images = batchnorm.recalibrate(encoder, crops)
    check_encoder_finite(encoder, run.source, config.seed)
    encoder_path = os.path.join(config.model_dir, ENCODER_NAME)
    with atomic_path(encoder_path) as tmp:
        encoder.save(tmp)

    previous = previous_run(config.model_dir)
    lr_changes = previous.get("learning_rate_changes", [])
    if run.lr_change and run.history:  # at least one epoch trained with the new rate
        lr_changes = lr_changes + [{"epoch": run.initial_epoch, **run.lr_change}]
        run_folder.record_lr_change(config.model_dir, config.learning_rate)
    saved = saved_history(config.model_dir)
    history = {k: saved.get(k, [])[:run.initial_epoch] + v
               for k, v in run.history.items()} or saved
    summary = {
        # A rerun asking for fewer epochs than were done trains none: the run has the more.
        "config": {**run_folder.recorded(config),
                   "epochs": max(config.epochs, run.epochs_done)},
        "num_examples": run.source.num_examples,
        "skipped_files": run.source.skipped,
        "steps_per_epoch": run.steps_per_epoch,
        "replicas": run.strategy.num_replicas_in_sync,
        "epochs_done": run.epochs_done,
        "resumed_from_epoch": run.initial_epoch,
        "final": ({k: v[-1] for k, v in run.history.items()} if run.history
                  else previous.get("final", {})),
        "history": history,
        "wall_time_seconds": round(time.time() - run.started, 2),
        "encoder": encoder_path,
        "learning_rate_changes": lr_changes,
        "encoder_bn_statistics": ({"source": "training images, centre crops", "images": bn_images}
                                  if bn_images else {"source": "training (not re-estimated)"}),
    }
    write_json(os.path.join(config.model_dir, RUN_NAME), summary)
    return summary

