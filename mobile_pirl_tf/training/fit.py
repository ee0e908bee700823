"""PIRL pretraining: the model and its optimizer, checkpoint / resume, `model.fit`
(settings: `core.config.TrainConfig`).

`train(config)` is what `python train.py` runs, under the strategy of `--strategy`
(`cluster`; on several machines the chief alone writes). A run lives in `model_dir`
(`run_folder`: lock, configuration, leftovers; `finish`: the encoder and run.json):

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
import glob
import logging
import os
import sys
import time

import keras
import tensorflow as tf

from mobile_pirl_tf.core.config import TrainConfig
from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.core.records import write_json
from mobile_pirl_tf.data import pipeline, sources
from mobile_pirl_tf.models import backbones, pirl
from mobile_pirl_tf.training import callbacks, cluster, finish, run_folder


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
    checkpoint = make_checkpoint(model, epoch_variable)
    restore_newest_readable(checkpoint, os.path.join(config.model_dir, "checkpoints"))
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(save_dir or config.model_dir,
                                                                  "checkpoints"), max_to_keep=3)
    return model, epoch_variable, manager


def _checkpoint_number(path):
    return int(path.rsplit("-", 1)[1].split(".")[0])


def restore_newest_readable(checkpoint, directory):
    """Restores the newest checkpoint of `directory` that reads back; a damaged one (truncated,
    emptied, overwritten) is set aside as <file>.damaged with a warning and the one before it
    is used (`max_to_keep` keeps three). Returns the restored path, or None (no checkpoint: the
    run starts at epoch 0, warned when damaged ones were set aside)."""
    indexes = glob.glob(os.path.join(directory, "ckpt-*.index"))  # the state file may be damaged
    candidates = sorted((p[:-len(".index")] for p in indexes), key=_checkpoint_number,
                        reverse=True)
    for path in candidates:
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
        except Exception as e:  # noqa: BLE001 - whatever a damaged file raises
            reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            logging.warning("checkpoint %s is damaged (%s); set aside as .damaged, trying the "
                            "one before it", path, reason)
            for name in glob.glob(path + ".*"):
                os.replace(name, name + ".damaged")
            continue
        kept = [p for p in candidates if os.path.exists(p + ".index")]
        tf.compat.v1.train.update_checkpoint_state(directory, path, list(reversed(kept)))
        return path
    if candidates:
        logging.warning("no readable checkpoint is left in %s: training starts again at epoch 0",
                        directory)
    return None


def _progress(config, steps_per_epoch):
    """(Keras' verbosity, our callbacks): --verbose when given; else a bar on a terminal, and
    in a log `callbacks.LogProgress`'s lines (at most every 30 s inside an epoch)."""
    if config.verbose is not None:
        return config.verbose, []
    if sys.stdout.isatty():
        return 1, []
    return 0, [callbacks.LogProgress(config.epochs, steps_per_epoch)]


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


def _fit(model, config, source, steps_per_epoch, initial_epoch, manager, epoch_variable,
         strategy, out_dir, extra_callbacks=()):
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
    history = finish.saved_history(out_dir)

    def record(epoch, logs):
        for key, value in logs.items():
            history[key] = history.get(key, [])[:epoch] + [float(value)]
        write_json(os.path.join(out_dir, finish.HISTORY_NAME), history)

    # The handed-in callbacks (the kNN monitor) first, so what they log is recorded.
    verbose, progress = _progress(config, steps_per_epoch)
    fit_callbacks = list(extra_callbacks) + [
        callbacks.EpochCheckpoint(manager, epoch_variable, record, steps_per_epoch),
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), update_freq="epoch"),
        *progress]
    history = model.fit(dataset, epochs=config.epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps_per_epoch, callbacks=fit_callbacks, shuffle=False,
                        verbose=verbose)
    return {k: [float(x) for x in v] for k, v in history.history.items()}


def train(config: TrainConfig, backbone_fn=None, extra_callbacks=()):
    """Pretrains with PIRL, resuming the run in `config.model_dir` if there is one.

    Args:
      config: the run's `TrainConfig` (validated here).
      backbone_fn: tests only: a builder of any Keras model used instead of `config.backbone`.
      extra_callbacks: Keras callbacks run before the checkpoint at every epoch (train.py hands
        in the kNN monitor of `--monitor_data_dir` here, so whatever they add to the epoch's
        logs is recorded).

    Returns:
      The run summary written to run.json (`finish.finish`); on a non-chief worker of a
      cluster, a short summary (the chief writes the run).
    """
    config.validate()
    if config.monitor_data_dir and not extra_callbacks:
        raise UsageError("--monitor_data_dir needs the kNN monitor, which train.py hands in; "
                         "from Python pass extra_callbacks=[evaluation.monitor.KNNMonitor(...)]")
    started = time.time()
    # First: a multi-worker strategy configures the collectives before TensorFlow runs anything.
    strategy = cluster.make_strategy(config.strategy, config.tpu)
    # Initial weights, views and negatives all follow --seed (bit-identical reruns on CPU).
    keras.utils.set_random_seed(config.seed)
    source = sources.make_source(config.dataset, config.data_dir, config.tfds_data_dir,
                                 config.tfds_manual_dir)
    if source.num_examples < 2:
        raise UsageError(f"PIRL needs at least 2 training images (each one's negatives are the "
                         f"others); {source.name} has {source.num_examples}")
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
            run = _train_epochs(config, source, steps_per_epoch, strategy, backbone_fn,
                                out_dir, extra_callbacks, started)
        return {"epochs_done": config.epochs, "final": {k: v[-1] for k, v in
                                                         run.history.items()},
                "encoder": f"{config.model_dir} (written by the chief)"}
    with run_folder.run_lock(config.model_dir):
        lr_change = run_folder.prepare(config, source.num_examples)
        run_folder.remove_leftovers(config.model_dir)
        with cluster.lost_workers_reported(strategy, config.model_dir):
            run = _train_epochs(config, source, steps_per_epoch, strategy, backbone_fn,
                                config.model_dir, extra_callbacks, started)
        run.lr_change = lr_change
        return finish.finish(run)


def _train_epochs(config, source, steps_per_epoch, strategy, backbone_fn, out_dir,
                  extra_callbacks, started):
    """Builds or restores the model and trains the epochs left, saving into out_dir; returns
    the `finish.TrainedRun`."""
    with precision_policy(config.mixed_precision):
        model, epoch_variable, manager = open_run(config, source.num_examples, steps_per_epoch,
                                                  strategy, backbone_fn, out_dir)
        initial_epoch = int(epoch_variable.numpy())
        if initial_epoch:
            logging.info("resuming %s at epoch %d", config.model_dir, initial_epoch)
        history = _fit(model, config, source, steps_per_epoch, initial_epoch, manager,
                       epoch_variable, strategy, out_dir, extra_callbacks)
    cluster.end_collectives(strategy)
    return finish.TrainedRun(
        config=config, source=source, steps_per_epoch=steps_per_epoch, started=started,
        strategy=strategy, model=model, epochs_done=int(epoch_variable.numpy()),
        initial_epoch=initial_epoch, history=history, lr_change={}, backbone_fn=backbone_fn)
