"""Callbacks of a PIRL run's `model.fit`: the per-epoch checkpoint and its finiteness checks
(the kNN monitor is evaluation's: `evaluation.monitor`, handed to `fit.train`)."""

import math

import keras
import numpy as np


def non_finite_variables(variables):
    """Paths of the variables holding a NaN or an infinity."""
    return [getattr(v, "path", getattr(v, "name", "?")) for v in variables
            if not np.isfinite(np.asarray(v.numpy() if hasattr(v, "numpy") else v)).all()]


ADVICE = ("nothing was saved for this epoch and the last checkpoint is intact; rerun with a "
          "lower --learning_rate (it may change on resume) to continue from it")


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights, optimizer, memory bank and the epoch after every finished epoch.

    A non-finite loss, or a non-finite value anywhere in the state about to be saved (weights,
    batch-norm statistics, memory bank, optimizer), stops training with a clear error and saves
    nothing, so the last good checkpoint stays the one a rerun resumes from.
    """

    def __init__(self, manager, epoch_variable, on_saved=None):
        super().__init__()
        self.manager, self.epoch_variable = manager, epoch_variable
        self.on_saved = on_saved  # on_saved(epoch, logs) after each checkpoint

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise FloatingPointError(
                f"the loss became {float(loss)} at step {batch + 1} of epoch "
                f"{int(self.epoch_variable.numpy()) + 1}; {ADVICE}")

    def on_epoch_end(self, epoch, logs=None):
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
