"""PIRL pretraining: strategy, checkpoint / resume, `model.fit` (settings: `config.TrainConfig`).

`train(config)` is what `python train.py` runs, under the strategy of `--strategy`
(`cluster.py`; on several machines the chief alone writes). A run lives in `model_dir`:

    config.json        the configuration (a different one is refused, never overwritten)
    checkpoints/       tf.train checkpoints, one per epoch: weights, optimizer, memory bank, epoch
    logs/              TensorBoard: each loss term, learning rate, bank statistics
    encoder.keras      the backbone alone (no heads), input [image_size, image_size, 3] pixels,
                       its batch-norm statistics re-estimated on centre crops of training images
                       (`--bn_recalibration_images`): the encoder to evaluate and to ship
    history.json       the loss terms of every finished epoch, written with each checkpoint
                       (so a run killed at any point keeps them)
    run.json           flags, epochs done, loss terms per epoch (over every invocation), wall
                       time, how the encoder's batch-norm statistics were set, learning-rate
                       changes made on resume
    run.lock           held (flock) by the one train.py process working in the folder; the
                       kernel releases it when that process ends, however it ends
"""

import contextlib
import dataclasses
import fcntl
import glob
import json
import logging
import os
import shutil
import socket
import sys
import time

import keras
import tensorflow as tf

from mobile_pirl_tf import (
    UsageError,
    backbones,
    batchnorm,
    callbacks,
    cluster,
    data,
    pipeline,
    pirl,
)
from mobile_pirl_tf.config import TrainConfig
from mobile_pirl_tf.records import read_json, write_json


def build_pirl(config, num_examples, backbone=None):
    """The PIRL model with its optimizer (SGD momentum, cosine decay to 1/1000), compiled."""
    backbone = backbone or backbones.build_backbone(config.backbone, config.width)
    model = pirl.PIRL(
        backbone, num_examples, embedding_dim=config.embedding_dim, head=config.head,
        num_negatives=config.num_negatives, temperature=config.temperature,
        pirl_lambda=config.pirl_lambda, bank_momentum=config.bank_momentum, loss=config.loss,
        weight_decay=config.weight_decay, shared_negatives=config.shared_negatives,
        seed=config.seed, transformed=config.transformed_kind(), name="pirl")
    optimizer = keras.optimizers.SGD(learning_rate=config.lr_for_batch(),
                                     momentum=config.momentum)
    if keras.mixed_precision.global_policy().compute_dtype == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(optimizer=optimizer, steps_per_execution=config.steps_per_execution)
    return model


def build_variables(model, config):
    """Creates every model and optimizer variable (so a checkpoint restores into them)."""
    model(pipeline.synthetic_batch(1, config.image_size, names=config.transform_names()))
    model.optimizer.build(model.trainable_variables)


def set_schedule(model, config, total_steps):
    model.optimizer.learning_rate = keras.optimizers.schedules.CosineDecay(
        config.lr_for_batch(), decay_steps=max(total_steps, 1), alpha=1e-3)


def make_checkpoint(model, epoch_variable):
    """A tf.train.Checkpoint of the model weights, the memory bank, the optimizer state and the
    epoch. Keras 3 models and optimizers do not checkpoint as objects, so their variables are
    keyed by position, which the model's construction fixes (Keras' auto-generated names are
    not stable across processes). The memory bank is also kept under its own name."""
    def by_position(variables):
        return {f"v{i:04d}": v.value for i, v in enumerate(variables)}

    bank = model.bank.rows
    weights = [v for v in model.weights if v is not bank]
    return tf.train.Checkpoint(model=by_position(weights), memory_bank=bank.value,
                               optimizer=by_position(model.optimizer.variables),
                               epoch=epoch_variable)


def open_run(config, num_examples, steps_per_epoch, strategy, backbone_fn=None,
             save_dir=None):
    """Builds the model under `strategy` and restores the latest checkpoint of model_dir, if any.

    Returns (model, epoch variable = epochs already done, checkpoint manager saving to
    save_dir/checkpoints, save_dir defaulting to model_dir).
    """
    with strategy.scope():
        model = build_pirl(config, num_examples, backbone=backbone_fn() if backbone_fn else None)
        set_schedule(model, config,
                     (config.schedule_epochs or config.epochs) * steps_per_epoch)
        build_variables(model, config)
        epoch_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    manager = tf.train.CheckpointManager(make_checkpoint(model, epoch_variable),
                                         os.path.join(save_dir or config.model_dir,
                                                      "checkpoints"),
                                         max_to_keep=3)
    latest = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    if latest:
        manager.checkpoint.restore(latest).assert_existing_objects_matched()
    return model, epoch_variable, manager


LOCK_NAME = "run.lock"


class RunInUse(UsageError):
    """Another process holds the run folder's lock."""


@contextlib.contextmanager
def run_lock(model_dir):
    """Holds model_dir/run.lock for one process: a second train.py on the folder is refused in
    one line naming the holder. An flock, so a killed holder never leaves it stuck."""
    if os.path.isdir(model_dir) and set(os.listdir(model_dir)) - {LOCK_NAME} and not \
            os.path.exists(os.path.join(model_dir, "config.json")):
        raise UsageError(f"--model_dir={model_dir} is not empty and holds no Mobile-PIRL run "
                         "(no config.json); use a new or empty folder")
    os.makedirs(model_dir, exist_ok=True)
    handle = open(os.path.join(model_dir, LOCK_NAME), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunInUse(f"--model_dir={model_dir} is in use by {holder}; wait for it to end "
                       "or use another --model_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"train.py process {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _remove_leftovers(model_dir):
    """Temporary files of a write that an earlier process did not finish (a kill, a full disk)."""
    for path in glob.glob(os.path.join(model_dir, "*.tmp*")) + glob.glob(
            os.path.join(model_dir, "checkpoints", "*_temp*")):
        logging.info("removing %s, left by an unfinished write", path)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _data_used(config_dict):
    """The configuration with the data that was used: a --data_dir overrides --dataset, so the
    TFDS name is not kept beside it (older runs recorded it; they compare the same)."""
    if config_dict.get("data_dir"):
        return {**config_dict, "dataset": None}
    return config_dict


def _recorded(config):
    """The configuration as config.json records it."""
    return _data_used(dataclasses.asdict(config))


def _comparable(config_dict):
    return {k: v for k, v in _data_used(config_dict).items() if k not in TrainConfig.RESUMABLE}


def prepare_model_dir(config, num_examples):
    """Creates model_dir with config.json, or checks that its run has this configuration.
    Returns {"from": old, "to": new} when the learning rate changes on resume ({} otherwise);
    config.json takes the new one once an epoch has trained with it (`_record_lr_change`)."""
    path = os.path.join(config.model_dir, "config.json")
    wanted = {**_recorded(config), "num_examples": num_examples}
    if os.path.exists(path):
        with open(path) as f:
            # A field added after that run was made takes its default (the run used it).
            stored = {**dataclasses.asdict(TrainConfig()), **json.load(f)}
        old, new = _comparable(stored), _comparable(wanted)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            shown = ", ".join(f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in diff[:4])
            raise UsageError(f"--model_dir={config.model_dir} holds a run with another "
                             f"configuration ({shown}); use a new --model_dir")
        if stored["learning_rate"] != config.learning_rate:
            return {"from": stored["learning_rate"], "to": config.learning_rate}
        return {}
    if os.path.isdir(config.model_dir) and set(os.listdir(config.model_dir)) - {LOCK_NAME}:
        raise UsageError(f"--model_dir={config.model_dir} is not empty and holds no Mobile-PIRL "
                         "run (no config.json); use a new or empty folder")
    os.makedirs(config.model_dir, exist_ok=True)
    write_json(path, wanted)
    return {}


def _progress_verbosity(config):
    if config.verbose is not None:
        return config.verbose
    return 1 if sys.stdout.isatty() else 2


@contextlib.contextmanager
def precision_policy(mixed_precision):
    """Keras' global dtype policy set to mixed_<float16|bfloat16> inside the block ("none":
    unchanged), restored on leaving it."""
    previous = keras.mixed_precision.global_policy()
    if mixed_precision != "none":
        keras.mixed_precision.set_global_policy(f"mixed_{mixed_precision}")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


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


def _fit(model, config, source, steps_per_epoch, initial_epoch, manager, epoch_variable,
         strategy, out_dir):
    """model.fit from initial_epoch to config.epochs, writing history.json and TensorBoard logs
    to out_dir; returns the new epochs' history."""
    if initial_epoch >= config.epochs:
        return {}
    cache = pipeline.image_cache(source) if config.cache_images else None

    def shard(index, count, replica_batch):
        return pipeline.pretraining_dataset(
            source, config.image_size, config.batch_size, steps_per_epoch, config.seed,
            initial_epoch, config.epochs, config.transform_names(), config.transform_params(),
            cache, shard=index, num_shards=count, replica_batch=replica_batch)
    dataset = cluster.distribute(strategy, shard, config.batch_size)
    history = _saved_history(out_dir)

    def record(epoch, logs):
        for key, value in logs.items():
            history[key] = history.get(key, [])[:epoch] + [float(value)]
        write_json(os.path.join(out_dir, "history.json"), history)

    fit_callbacks = []
    if config.monitor_data_dir:  # first, so knn_top1 is recorded and logged
        fit_callbacks.append(callbacks.KNNMonitor(config.monitor_data_dir, config.image_size,
                                                  config.monitor_every))
    fit_callbacks.append(callbacks.EpochCheckpoint(manager, epoch_variable, record))
    fit_callbacks.append(keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"),
                                                     update_freq="epoch"))
    history = model.fit(dataset, epochs=config.epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps_per_epoch, callbacks=fit_callbacks, shuffle=False,
                        verbose=_progress_verbosity(config))
    return {k: [float(x) for x in v] for k, v in history.history.items()}


def train(config: TrainConfig, backbone_fn=None):
    """Pretrains with PIRL and returns the run summary (also written to run.json).

    `backbone_fn` (tests only) replaces the named backbone by a builder of any Keras model.
    """
    config.validate()
    started = time.time()
    # First: a multi-worker strategy configures the collectives before TensorFlow runs anything.
    strategy = cluster.make_strategy(config.strategy, config.tpu)
    # Initial weights, views and negatives all follow --seed (bit-identical reruns on CPU).
    keras.utils.set_random_seed(config.seed)
    source = data.make_source(config.dataset, config.data_dir, config.tfds_data_dir,
                              config.tfds_manual_dir)
    steps_per_epoch = source.num_examples // config.batch_size
    if steps_per_epoch == 0:
        raise UsageError(f"--batch_size={config.batch_size} is larger than the data set "
                         f"({source.num_examples} images); lower it")
    if config.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.steps_per_epoch)
    logging.info("strategy %s with %d replica(s), %d examples, %d steps per epoch",
                 type(strategy).__name__, strategy.num_replicas_in_sync, source.num_examples,
                 steps_per_epoch)
    if config.batch_size % strategy.num_replicas_in_sync:
        raise UsageError(f"--batch_size={config.batch_size} must be a multiple of the "
                         f"{strategy.num_replicas_in_sync} replicas")
    if not cluster.is_chief(strategy):  # the chief writes the run; this worker only trains
        with cluster.worker_dir() as out_dir, \
                cluster.lost_workers_reported(strategy, config.model_dir):
            history_logs = _train_epochs(config, source, steps_per_epoch, strategy,
                                         backbone_fn, out_dir)[0]
        return {"epochs_done": config.epochs, "final": {k: v[-1] for k, v in
                                                         history_logs.items()},
                "encoder": f"{config.model_dir} (written by the chief)"}
    with run_lock(config.model_dir):
        lr_change = prepare_model_dir(config, source.num_examples)
        _remove_leftovers(config.model_dir)
        with cluster.lost_workers_reported(strategy, config.model_dir):
            trained = _train_epochs(config, source, steps_per_epoch, strategy, backbone_fn,
                                    config.model_dir)
        return _write_run(config, source, steps_per_epoch, started, backbone_fn, strategy,
                          lr_change, *trained)


def _train_epochs(config, source, steps_per_epoch, strategy, backbone_fn, out_dir):
    """Builds or restores the model and trains the epochs left, saving into out_dir; returns
    (the new epochs' history, the model, the epoch variable, the epoch it started from)."""
    with precision_policy(config.mixed_precision):
        model, epoch_variable, manager = open_run(config, source.num_examples, steps_per_epoch,
                                                  strategy, backbone_fn, out_dir)
        initial_epoch = int(epoch_variable.numpy())
        if initial_epoch:
            logging.info("resuming %s at epoch %d", config.model_dir, initial_epoch)
        history_logs = _fit(model, config, source, steps_per_epoch, initial_epoch, manager,
                            epoch_variable, strategy, out_dir)
    cluster.end_collectives(strategy)
    return history_logs, model, epoch_variable, initial_epoch


def _write_run(config, source, steps_per_epoch, started, backbone_fn, strategy, lr_change,
               history_logs, model, epoch_variable, initial_epoch):
    """encoder.keras (statistics re-estimated, checked finite) and run.json."""
    encoder = float32_encoder(model, config, backbone_fn, strategy)
    # What is shipped is what is evaluated: the statistics of plain views of training images,
    # not those of training (mixed from image views and jigsaw patches).
    bn_images = (batchnorm.recalibrate_on_source(encoder, source, config.bn_recalibration_images,
                                                 seed=config.seed)
                 if config.bn_recalibration_images else 0)
    check_encoder_finite(encoder, source, config.seed)
    encoder_path = os.path.join(config.model_dir, "encoder.keras")
    tmp_path = os.path.join(config.model_dir, "encoder.tmp.keras")
    encoder.save(tmp_path)
    os.replace(tmp_path, encoder_path)

    previous = _previous_run(config.model_dir)
    lr_changes = previous.get("learning_rate_changes", [])
    if lr_change and history_logs:  # at least one epoch trained with the new rate
        lr_changes = lr_changes + [{"epoch": initial_epoch, **lr_change}]
        path = os.path.join(config.model_dir, "config.json")
        write_json(path, {**read_json(path), "learning_rate": config.learning_rate})
    saved = _saved_history(config.model_dir)
    history = {k: saved.get(k, [])[:initial_epoch] + v
               for k, v in history_logs.items()} or saved
    summary = {
        "config": _recorded(config),
        "num_examples": source.num_examples,
        "skipped_files": source.skipped,
        "steps_per_epoch": steps_per_epoch,
        "replicas": strategy.num_replicas_in_sync,
        "epochs_done": int(epoch_variable.numpy()),
        "resumed_from_epoch": initial_epoch,
        "final": ({k: v[-1] for k, v in history_logs.items()} if history_logs
                  else previous.get("final", {})),
        "history": history,
        "wall_time_seconds": round(time.time() - started, 2),
        "encoder": encoder_path,
        "learning_rate_changes": lr_changes,
        "encoder_bn_statistics": ({"source": "training images, centre crops", "images": bn_images}
                                  if bn_images else {"source": "training (not re-estimated)"}),
    }
    write_json(os.path.join(config.model_dir, "run.json"), summary)
    return summary


def check_encoder_finite(encoder, source, seed, images=8):
    """Raises FloatingPointError (nothing written) unless the encoder's state and its features
    of a few training images are all finite."""
    from mobile_pirl_tf.callbacks import non_finite_variables

    bad = non_finite_variables(encoder.variables)
    if not bad:
        sample = data.sample_images(source, images, int(encoder.input.shape[1]), seed)
        if len(sample) and not tf.reduce_all(tf.math.is_finite(encoder(sample))):
            bad = ["its features"]
    if bad:
        raise FloatingPointError(
            f"the trained encoder is not finite ({bad[0]}); encoder.keras was not written; "
            "rerun with a lower --learning_rate (it may change on resume)")


def _saved_history(model_dir):
    """The per-epoch history kept so far: history.json (written at every checkpoint), else an
    older run's run.json."""
    saved = read_json(os.path.join(model_dir, "history.json"))
    return saved if saved is not None else _previous_run(model_dir).get("history", {})


def _previous_run(model_dir):
    """The run.json of an earlier invocation ({} when there is none)."""
    return read_json(os.path.join(model_dir, "run.json"), {})
