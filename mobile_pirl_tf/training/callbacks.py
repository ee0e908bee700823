"""Callbacks of a PIRL run's `model.fit`: the per-epoch checkpoint and its finiteness checks
(the kNN monitor is evaluation's: `evaluation.monitor`, handed to `fit.train`)."""

import logging
import math
import time

import keras
import numpy as np

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.core.progress import duration


def non_finite_variables(variables):
    """Paths of the variables holding a NaN or an infinity."""
    return [getattr(v, "path", getattr(v, "name", "?")) for v in variables
            if not np.isfinite(np.asarray(v.numpy() if hasattr(v, "numpy") else v)).all()]


class ShortEpoch(UsageError):
    """An epoch ran fewer steps than planned: its input ran out."""


ADVICE = ("nothing was saved for this epoch and the last checkpoint is intact; rerun with a "
          "lower --learning_rate (it may change on resume) to continue from it")


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights, optimizer, memory bank and the epoch after every finished epoch.

    A non-finite loss, or a non-finite value anywhere in the state about to be saved (weights,
    batch-norm statistics, memory bank, optimizer), stops training with a clear error and saves
    nothing, so the last good checkpoint stays the one a rerun resumes from.
    """

    def __init__(self, manager, epoch_variable, on_saved=None, steps_per_epoch=None):
        super().__init__()
        self.manager, self.epoch_variable = manager, epoch_variable
        self.on_saved = on_saved  # on_saved(epoch, logs) after each checkpoint
        self.steps_per_epoch, self.steps = steps_per_epoch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps = batch + 1  # the step index (the last of an execution of several)
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise FloatingPointError(
                f"the loss became {float(loss)} at step {batch + 1} of epoch "
                f"{int(self.epoch_variable.numpy()) + 1}; {ADVICE}")

    def on_epoch_end(self, epoch, logs=None):
        if self.steps_per_epoch and self.steps < self.steps_per_epoch:
            self.model.stop_training = True
            raise ShortEpoch(f"epoch {epoch + 1} ran {self.steps} of {self.steps_per_epoch} "
                             "steps: images the folder scan accepted failed to decode (changed "
                             "since?); nothing was saved for this epoch: rerun to scan the "
                             "folder again and resume from the last checkpoint")
        bad = non_finite_variables(self.model.variables + self.model.optimizer.variables)
        if bad:
            self.model.stop_training = True
            raise FloatingPointError(
                f"{len(bad)} tensors became non-finite in epoch {epoch + 1} (first: {bad[0]}); "
                f"{ADVICE}")
        self.epoch_variable.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)
        if self.on_saved:
            self.on_saved(epoch, logs or {})


class LogProgress(keras.callbacks.Callback):
    """Training progress for a log (not a terminal): inside an epoch a line at most every
    `interval` seconds (step, loss, time left), and one line per finished epoch with its loss
    terms; a terminal gets Keras' own progress bar instead."""

    def __init__(self, epochs, steps_per_epoch, interval=30.0):
        super().__init__()
        self.epochs, self.steps, self.interval = epochs, steps_per_epoch, interval

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch, self.started = epoch, time.time()
        self.last = self.started

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        if now - self.last >= self.interval and batch + 1 < self.steps:
            self.last = now
            left = (now - self.started) / (batch + 1) * (self.steps - batch - 1)
            loss = (logs or {}).get("loss")
            logging.info("epoch %d/%d: step %d/%d%s, %s left in the epoch", self.epoch + 1,
                         self.epochs, batch + 1, self.steps,
                         "" if loss is None else f", loss {float(loss):.4f}", duration(left))

    def on_epoch_end(self, epoch, logs=None):
        terms = ", ".join(f"{k} {float(v):.4g}" for k, v in (logs or {}).items())
        logging.info("epoch %d/%d done in %s: %s", epoch + 1, self.epochs,
                     duration(time.time() - self.started), terms)
