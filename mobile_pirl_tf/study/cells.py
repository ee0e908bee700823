"""What the study and the sweep train and score: a cell (backbone, transformations), a run of a
cell (a seed and a length), and the runner that trains a run and scores it.

A run is one `train.py` run of `--epochs` on its own completed cosine schedule, under one seed
(initial weights, views, negatives and data order), scored on the labelled splits with the
linear probe (what the study ranks by) and kNN beside it. Its record

    <output_dir>/records/<backbone>/<transforms>/seed<N>-<E>ep.json

holds the scores, the time it took and the machine it ran on: the study reads records back
instead of training again, so a later invocation (on another machine, from the records
committed with the report) continues where the last stopped. The run folder itself
(checkpoints, the encoder) lives under `<runs_dir>` and is not needed once the record is
written. A random-init encoder of each backbone is scored the same way (`baseline`).
"""

import dataclasses
import datetime
import gc
import glob
import logging
import os
import shutil
import socket
import time

from mobile_pirl_tf.core.config import transformed_kind
from mobile_pirl_tf.core.records import DamagedRecord, read_json, set_aside, write_json


@dataclasses.dataclass(frozen=True)
class Cell:
    """A backbone with a transformed view (`--transforms` spec, e.g. "jigsaw+rotation")."""
    backbone: str
    transforms: str

    @property
    def label(self):
        return f"{self.backbone}/{self.transforms}"

    @property
    def kind(self):
        """"patches" (the view contains jigsaw) or "image": what a step costs depends on it."""
        return transformed_kind(self.transforms)


@dataclasses.dataclass(frozen=True)
class Run:
    """A cell trained under one seed for a number of epochs (a completed schedule)."""
    cell: Cell
    seed: int
    epochs: int

    @property
    def key(self):
        return f"{self.cell.label}/seed{self.seed}/{self.epochs}ep"


class CellBusy(Exception):
    """Another process (another machine sharing the folders) is training the run."""


def machine():
    """The CPU model and core count of this machine, as the records note it."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def clear_session():
    import keras

    keras.backend.clear_session()
    gc.collect()


class CellRunner:
    """Trains and scores runs, keeping one record per run (module docstring).

    Args:
      base: the `TrainConfig` every run starts from (backbone, transforms, seed, epochs and
        model_dir are set per run).
      output_dir: where `records/` goes.
      runs_dir: where the run folders go.
      splits: the (train, test) `data.labelled.LabelledSplit`s the probes use.
      keep_checkpoints: keep a scored run's checkpoints (by default they are removed once its
        record is written; the encoder stays).
      log: where progress lines go.
    """

    def __init__(self, base, output_dir, runs_dir, splits, keep_checkpoints=False, log=print):
        self.base, self.output_dir, self.runs_dir = base, output_dir, runs_dir
        self.train_split, self.test_split = splits
        self.keep_checkpoints, self.log = keep_checkpoints, log

    def record_path(self, run):
        return os.path.join(self.output_dir, "records", run.cell.backbone, run.cell.transforms,
                            f"seed{run.seed}-{run.epochs}ep.json")

    def run_dir(self, run):
        return os.path.join(self.runs_dir, run.cell.backbone, run.cell.transforms,
                            f"seed{run.seed}-{run.epochs}ep")

    def _read(self, path):
        """A record, or None; a damaged one is set aside (the run is redone) with a warning."""
        try:
            return read_json(path)
        except DamagedRecord as e:
            logging.warning("%s; set aside as %s, the run will be redone", e, set_aside(path))
            return None

    def record(self, run):
        """The run's record, or None when it has not been scored."""
        return self._read(self.record_path(run))

    def recorded(self):
        """[(Run, record)] of every run recorded under output_dir/records."""
        out = []
        root = os.path.join(self.output_dir, "records")
        for path in sorted(glob.glob(os.path.join(root, "*", "*", "seed*-*ep.json"))):
            backbone, transforms, name = os.path.relpath(path, root).split(os.sep)
            seed, epochs = name[len("seed"):-len("ep.json")].split("-")
            run = Run(Cell(backbone, transforms), int(seed), int(epochs))
            record = self.record(run)
            if record is not None:
                out.append((run, record))
        return out

    def scores(self, run):
        """{linear_top1, ...} of a scored run, else None (an alias the stages read)."""
        return self.record(run)

    def run(self, run):
        """The run's record: read back, or trained and scored now (`score`).

        Returns:
          {"linear_top1", "linear_top5", "knn_top1", "final_loss", "train_seconds",
           "probe_seconds", "seconds", "epochs", "seed", "machine", "date", ...}.

        Raises:
          CellBusy: another process holds the run folder's lock.
        """
        done = self.record(run)
        if done is not None:
            return done
        started = time.time()
        result = self.score(run)
        result.update(seconds=round(time.time() - started, 1), epochs=run.epochs, seed=run.seed,
                      machine=machine(), host=socket.gethostname(),
                      date=datetime.date.today().isoformat())
        os.makedirs(os.path.dirname(self.record_path(run)), exist_ok=True)
        write_json(self.record_path(run), result)
        if not self.keep_checkpoints:
            shutil.rmtree(os.path.join(self.run_dir(run), "checkpoints"), ignore_errors=True)
        return result

    def score(self, run):
        """Trains the run (train.py's `fit.train`, resuming its folder) and probes its
        encoder: {"linear_top1", "linear_top5", "knn_top1", "final_loss", ...}."""
        from mobile_pirl_tf.models import backbones
        from mobile_pirl_tf.training import fit, run_folder

        started = time.time()
        config = dataclasses.replace(
            self.base, backbone=run.cell.backbone, transforms=run.cell.transforms,
            seed=run.seed, epochs=run.epochs, schedule_epochs=None,
            model_dir=self.run_dir(run), verbose=0)
        try:
            summary = fit.train(config)
        except run_folder.RunInUse as e:
            raise CellBusy(str(e)) from None
        trained = time.time()
        encoder, path = backbones.load_encoder(encoder_path=summary["encoder"])
        result = self._probe(encoder, path, run.seed, bn_images=0)
        result.update(final_loss=summary["final"].get("loss"),
                      steps_per_epoch=summary["steps_per_epoch"],
                      train_seconds=round(trained - started, 1),
                      probe_seconds=round(time.time() - trained, 1))
        clear_session()  # every run builds a new model: free the last one's graphs
        return result

    def _probe(self, encoder, path, seed, bn_images):
        from mobile_pirl_tf.evaluation import features, probes

        train_f, test_f = features.features_for(
            encoder, path, self.train_split, self.test_split, int(encoder.input.shape[1]),
            cache_dir=None, bn_images=bn_images)
        args = (train_f, self.train_split.labels, test_f, self.test_split.labels,
                len(self.train_split.classes))
        linear = probes.evaluate_features("linear", *args, seed=seed)
        return {"linear_top1": linear["top1"], "linear_top5": linear.get("top5"),
                "knn_top1": probes.evaluate_features("knn", *args)["top1"],
                "n_train": int(len(self.train_split.labels)),
                "n_test": int(len(self.test_split.labels))}

    def baseline_path(self, backbone):
        return os.path.join(self.output_dir, "records", backbone, "random-init.json")

    def record_baseline(self, backbone):
        """The random-init record of a backbone, or None when it has not been scored."""
        return self._read(self.baseline_path(backbone))

    def baseline(self, backbone, seed=0):
        """The record of the backbone with random weights (`score_baseline`), read back or
        scored now."""
        path = self.baseline_path(backbone)
        done = self.record_baseline(backbone)
        if done is not None:
            return done
        started = time.time()
        result = self.score_baseline(backbone, seed)
        result.update(seconds=round(time.time() - started, 1), seed=seed, machine=machine(),
                      date=datetime.date.today().isoformat())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json(path, result)
        return result

    def score_baseline(self, backbone, seed=0):
        """The probes of the backbone with random weights, batch-norm statistics re-estimated
        on 2,560 train images (as the probes' protocol does for it)."""
        from mobile_pirl_tf.evaluation import baselines, features

        encoder = baselines.random_encoder(backbone, self.base.image_size, seed=seed)
        result = self._probe(encoder, "", seed, bn_images=features.BN_RECALIBRATION_IMAGES)
        clear_session()
        return result
