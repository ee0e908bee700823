"""The study: the proposal's experiments A-D as one resumable, budget-aware command.

    python -m mobile_pirl_tf.study --data_dir=../shared/data/imagenette/train \\
        --eval_data_dir=../shared/data/imagenette --image_size=64 --budget_hours=2 \\
        --output_dir=runs/study [--backbones=...] [--transforms=...] [--dry_run]

Stages, each choosing its candidates from the previous one's results:

  A  every --backbones entry (ResNet-50 is the reference) with the jigsaw pretext;
  B  every single transform of --transforms, every pair, and triples (the two best pairs, each
     extended by a transform of the three best singles), on the stage-A winner (or
     --study_backbone);
  C  every mobile backbone (all but ResNet-50) with the --top_k best combinations of B;
  D  the final table of C's finalists against their cost: parameters, multiply-adds, LiteRT
     file size and host latency (float32, int8), phone latency from --phone_results.

Each of A, B and C is a successive-halving search (Hyperband's rule): every cell trains
--min_epochs on the schedule of --max_epochs and is scored with the kNN probe; the best
1/--eta of the cells go on to --eta times the epochs, and so on up to --max_epochs (at least
--finalists cells reach the last rung). The
--finalists best cells at --max_epochs are then trained again under --seeds seeds and scored
with the linear probe and kNN: tables show mean +- a 95% t-interval, and a winner is named only
when its interval clears the runner-up's (otherwise the tied set is listed).

A cell is (backbone, transforms, seed): its run folder is shared by every stage that needs it,
so a cell of A reappearing in C is not trained twice. Each stage's cells are trials of an
Optuna study (`--storage`, an SQLite file in --output_dir by default): the rung scores are
reported to them, cut cells are marked pruned, and a rerun continues where the last stopped
(finished cells are read back, an interrupted cell resumes from its last epoch checkpoint).
Several machines can work on one study: the same command with one --output_dir on a shared
file system and one --storage (an RDB URL, e.g. postgresql://...): a cell whose run.lock
another worker holds is left for last in the rung and its score read back when that worker
has written it (or trained here, if that worker died). Start one worker first, until its plan
is printed, so that the stage's trials are created once. The halving rule itself is applied
over the whole rung at once: Optuna's `SuccessiveHalvingPruner` is the asynchronous variant
(a cell is judged against the cells that reached the rung before it), which on one machine
keeps the first cells of every rung whatever their score.

Before running, the cost of every stage is estimated from step times measured on this machine
(`costs.json`) and printed as the plan (`--dry_run` stops there); the study stops at
--budget_hours (the time of this invocation) with a partial report rather than run over it.

Writes to --output_dir: REPORT.md (a section per stage), results.csv (every run: flags, seed,
epochs, wall time, linear, kNN, cost), heatmap.png (stage B), pareto.png (stage D),
cells/ (the runs), study.db (the Optuna trials), costs.json.
"""

import dataclasses
import gc
import hashlib
import itertools
import logging
import math
import os
import socket
import time

from mobile_pirl_tf import UsageError, cli, config
from mobile_pirl_tf.progress import duration
from mobile_pirl_tf.records import read_json, write_json

STAGES = ("A", "B", "C", "D")
REFERENCE_BACKBONE = "resnet50"
DEFAULT_BACKBONES = ("mobilenetv2", "mobilenetv3small", "mobilenetv3large", "mnasnet_a1",
                     "efficientnetb0", "efficientnetlite0", REFERENCE_BACKBONE)
DEFAULT_TRANSFORMS = ("jigsaw", "rotation", "crop", "cutout", "color", "sobel", "noise", "blur")
PIPELINE_FACTOR = 1.25  # whole fed steps / the step alone (RESULTS.md: 181 vs 225 images/s)


class OutOfBudget(Exception):
    """The next piece of work would run past --budget_hours."""


class CellBusy(Exception):
    """Another process (another machine sharing the output folder) is training the cell."""


BUSY_POLL_SECONDS = 15.0


@dataclasses.dataclass(frozen=True)
class Cell:
    backbone: str
    transforms: str
    seed: int = 0

    @property
    def key(self):
        return f"{self.backbone}/{self.transforms}/seed{self.seed}"

    @property
    def kind(self):
        return "patches" if "jigsaw" in config.parse_transforms(self.transforms) else "image"

    def with_seed(self, seed):
        return dataclasses.replace(self, seed=seed)


def mobile_backbones(names):
    """The backbones of stage C: all but the reference (the proposal's question C is how the
    mobile networks do with the best combinations; ResNet-50 is stage A's yardstick)."""
    return [n for n in names if n != REFERENCE_BACKBONE] or list(names)


def rungs(min_epochs, max_epochs, eta):
    """[min, min * eta, ...] up to max_epochs (which is always the last rung)."""
    out = [min_epochs]
    while out[-1] * eta < max_epochs:
        out.append(out[-1] * eta)
    return out + [max_epochs] if out[-1] < max_epochs else out


def kept_count(n, eta, minimum=1):
    """How many of n cells go on to the next rung: ceil(n / eta), and at least `minimum`."""
    return max(minimum, math.ceil(n / eta))


def keep_best(scores, eta, minimum=1):
    """Hyperband's successive-halving rule: the `kept_count` best of {cell: score} (ties kept
    in the given order)."""
    ranked = sorted(scores, key=lambda c: -scores[c])
    return ranked[:kept_count(len(ranked), eta, minimum)]


def stage_b_cells(names):
    """Singles and unordered pairs of `names` (pairs applied in the listed order)."""
    return list(names) + [f"{a}+{b}" for a, b in itertools.combinations(names, 2)]


def stage_b_triples(single_scores, pair_scores, names):
    """The two best pairs, each extended by each of the three best singles it lacks (order of
    `names`)."""
    best_singles = sorted(single_scores, key=lambda s: -single_scores[s])[:3]
    triples = []
    for pair in sorted(pair_scores, key=lambda p: -pair_scores[p])[:2]:
        parts = pair.split("+")
        for single in best_singles:
            if single not in parts:
                triple = "+".join(sorted(parts + [single], key=names.index))
                if triple not in triples:
                    triples.append(triple)
    return triples


# --- measured costs ---------------------------------------------------------------------------

class Costs:
    """Seconds of the study's pieces of work, from measurements on this machine kept in
    costs.json: per (backbone, kind) the fixed cost of a train.py call (building, tracing,
    checkpointing, writing the encoder with its re-estimated statistics), the time of a PIRL
    step, and the time per image of the frozen encoder. The fixed cost and the encoder's time
    are measured once per backbone (one real train.py call): both kinds trace two backbone
    passes, and their fixed costs differ by less than a run-to-run spread (RESULTS.md);
    the step is timed per kind."""

    def __init__(self, path, base, steps_per_epoch, eval_images):
        self.path, self.base = path, base
        self.steps_per_epoch, self.eval_images = steps_per_epoch, eval_images
        self.table = read_json(path, {})
        self.warm = False

    def _key(self, backbone, kind):
        b = self.base
        return f"{backbone}/{kind}/{b.image_size}px/batch{b.batch_size}"

    def measure(self, backbone, kind, scratch_dir, log=print):
        key = self._key(backbone, kind)
        if key in self.table:
            return self.table[key]
        log(f"measuring {key} ...")
        cell = Cell(backbone, "jigsaw" if kind == "patches" else "rotation")
        step_s = measure_step_seconds(self.base, cell)
        other = self.table.get(self._key(backbone, "image" if kind == "patches" else "patches"))
        if other is not None:  # this backbone's train.py call is measured already
            costs = {k: v for k, v in other.items() if k != "step_s"}
        else:
            if not self.warm:  # the process's first training call also pays one-time set-up
                two_step_train(self.base, cell, scratch_dir)
                self.warm = True
            costs = measure_call_costs(self.base, cell, scratch_dir, step_s)
        self.table[key] = {**costs, "step_s": step_s}
        write_json(self.path, self.table)
        return self.table[key]

    def train_seconds(self, cell, from_epochs, to_epochs):
        c = self.table[self._key(cell.backbone, cell.kind)]
        steps = (to_epochs - from_epochs) * self.steps_per_epoch
        return c["setup_s"] + steps * c["step_s"] * PIPELINE_FACTOR

    def probe_seconds(self, cell, linear=False):
        c = self.table[self._key(cell.backbone, cell.kind)]
        return c["probe_setup_s"] + self.eval_images * c["image_s"] + (10.0 if linear else 1.0)


def two_step_train(base, cell, scratch_dir):
    """Seconds of a real two-step train.py call of `cell` (its run folder in scratch_dir)."""
    import shutil

    from mobile_pirl_tf import training

    run_dir = os.path.join(scratch_dir, f"{cell.backbone}-{cell.kind}")
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = dataclasses.replace(base, backbone=cell.backbone, transforms=cell.transforms, epochs=1,
                              steps_per_epoch=2, model_dir=run_dir, verbose=0)
    started = time.perf_counter()
    training.train(cfg)
    return time.perf_counter() - started, run_dir


def measure_call_costs(base, cell, scratch_dir, step_s):
    """The fixed cost of a train.py call (a two-step call less its two steps of step_s) and
    the probe's feature extraction: setting up the saved encoder, then seconds per image."""
    import shutil

    import numpy as np

    from mobile_pirl_tf import backbones

    seconds, run_dir = two_step_train(base, cell, scratch_dir)
    started = time.perf_counter()
    encoder, _ = backbones.load_encoder(encoder_path=os.path.join(run_dir, "encoder.keras"))
    images = np.random.default_rng(0).uniform(0, 255, (64, base.image_size, base.image_size, 3))
    encoder.predict_on_batch(images)
    probe_setup = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(3):
        encoder.predict_on_batch(images)
    image_s = (time.perf_counter() - started) / (3 * 64)
    shutil.rmtree(run_dir, ignore_errors=True)
    _clear()
    return {"setup_s": round(seconds - 2 * step_s, 2), "probe_setup_s": round(probe_setup, 2),
            "image_s": round(image_s, 6)}


def measure_step_seconds(base, cell):
    """Seconds of one traced PIRL step of `cell` on a synthetic batch (median of three)."""
    import tensorflow as tf

    from mobile_pirl_tf import pipeline, training

    cfg = dataclasses.replace(base, backbone=cell.backbone, transforms=cell.transforms)
    model = training.build_pirl(cfg, 10_000)
    training.set_schedule(model, cfg, 1000)
    training.build_variables(model, cfg)
    step = tf.function(model.train_step)
    batch = pipeline.synthetic_batch(base.batch_size, base.image_size, 10_000,
                                     names=cfg.transform_names())
    float(step(batch)["loss"])
    times = []
    for _ in range(3):
        started = time.perf_counter()
        float(step(batch)["loss"])
        times.append(time.perf_counter() - started)
    _clear()
    return round(sorted(times)[1], 4)


def _clear():
    import keras

    keras.backend.clear_session()
    gc.collect()


# --- one cell -----------------------------------------------------------------------------

class CellRunner:
    """Trains a cell up to a number of epochs (on the --max_epochs schedule; resuming its run
    folder) and scores it; every score is kept in the cell's scores.json, so a score asked for
    again is read back, not recomputed."""

    def __init__(self, base, output_dir, max_epochs, splits):
        self.base, self.output_dir, self.max_epochs = base, output_dir, max_epochs
        self.train_split, self.test_split = splits

    def cell_dir(self, cell):
        return os.path.join(self.output_dir, "cells", cell.backbone, cell.transforms,
                            f"seed{cell.seed}")

    def scores(self, cell):
        """{epochs: scores} of the cell so far."""
        saved = read_json(os.path.join(self.cell_dir(cell), "scores.json"), {})
        return {int(k): v for k, v in saved.items()}

    def run(self, cell, epochs, linear=False):
        """{knn_top1, [linear_top1, linear_top5], seconds, ...} of the cell at `epochs`."""
        scores = self.scores(cell)
        if epochs in scores and (not linear or "linear_top1" in scores[epochs]):
            return scores[epochs]
        from mobile_pirl_tf import backbones, features, probes, training

        started = time.time()
        cfg = dataclasses.replace(self.base, backbone=cell.backbone, transforms=cell.transforms,
                                  seed=cell.seed, epochs=epochs, schedule_epochs=self.max_epochs,
                                  model_dir=self.cell_dir(cell), verbose=0)
        try:
            summary = training.train(cfg)
        except training.RunInUse as e:  # its run.lock is held
            raise CellBusy(str(e)) from None
        encoder, path = backbones.load_encoder(encoder_path=summary["encoder"])
        train_f, test_f = features.features_for(
            encoder, path, self.train_split, self.test_split, cfg.image_size, cache_dir=None,
            bn_images=probes.protocol_bn_images(path))
        args = (train_f, self.train_split.labels, test_f, self.test_split.labels,
                len(self.train_split.classes))
        result = {"knn_top1": probes.evaluate_features("knn", *args)["top1"],
                  "final_loss": summary["final"].get("loss"), "epochs": epochs}
        if linear:
            linear_result = probes.evaluate_features("linear", *args, seed=cell.seed)
            result["linear_top1"] = linear_result["top1"]
            result["linear_top5"] = linear_result.get("top5")
        previous = scores.get(epochs, {})
        result["seconds"] = round(previous.get("seconds", 0) + time.time() - started, 1)
        scores[epochs] = {**previous, **result}
        write_json(os.path.join(self.cell_dir(cell), "scores.json"),
                   {str(k): v for k, v in scores.items()})
        _clear()
        return scores[epochs]


# --- a stage ------------------------------------------------------------------------------

class Stage:
    """One successive-halving search over cells, recorded as the trials of an Optuna study,
    then its finalists under several seeds."""

    def __init__(self, name, cells, runner, costs, budget, flags, storage, log=print):
        self.name, self.cells, self.runner, self.costs = name, cells, runner, costs
        self.budget, self.f, self.log = budget, flags, log
        self.rungs = rungs(flags.min_epochs, flags.max_epochs, flags.eta)
        self.storage = storage
        self.failed = {}   # cell key -> error
        self.rung_scores = {}  # epochs -> {cell key: knn}

    # The estimate of what running this stage will cost (nothing is run).
    def planned_seconds(self, planned=None, dearest=False):
        """The estimate of what running this stage will cost (nothing is run). Which cells go
        on is unknown until they are scored: a rung is costed as its expected cost when every
        cell is as likely as any other to go on (with dearest=True, the cost when the dearest
        go on); once a rung's scores are all recorded, they decide. planned: the (cell key,
        epochs) an earlier stage's estimate already holds (updated); a cell two stages share
        (A's jigsaw cell of the study backbone is also B's) is costed once."""
        planned = set() if planned is None else planned
        scores = {c: self.runner.scores(c) for c in self.cells}  # read once, not per rung
        total, done = 0.0, 0
        reach = {cell: 1.0 for cell in self.cells}  # the chance that a cell reaches the rung
        count, last = len(self.cells), len(self.rungs) - 1  # cells at the rung
        for i, r in enumerate(self.rungs):
            for cell, p in reach.items():
                if p and r not in scores[cell] and (cell.key, r) not in planned:
                    planned.add((cell.key, r))
                    total += p * (self.costs.train_seconds(cell, done, r)
                                  + self.costs.probe_seconds(cell))
            done = r
            keep = (min(self.f.finalists, count) if i == last
                    else kept_count(count, self.f.eta, self._minimum_kept(i)))
            reach, count = self._going_on(reach, scores, r, count, keep, dearest), keep
        for cell, p in reach.items():
            for seed in range(self.f.seeds) if p else ():
                seeded = cell.with_seed(seed)
                if "linear_top1" in self.runner.scores(seeded).get(self.f.max_epochs, {}):
                    continue
                train = 0.0 if seed == 0 else self.costs.train_seconds(seeded, 0,
                                                                       self.f.max_epochs)
                total += p * (train + self.costs.probe_seconds(seeded, linear=True))
        return total

    def _going_on(self, reach, scores, epochs, count, keep, dearest):
        """{cell: chance of going on} after the rung at `epochs` keeps `keep` of its `count`
        cells (scores: each cell's recorded scores)."""
        going = [c for c, p in reach.items() if p]
        knn = {c: scores[c].get(epochs, {}).get("knn_top1") for c in going}
        if all(v is not None for v in knn.values()) and set(reach.values()) <= {0.0, 1.0}:
            chosen = sorted(going, key=lambda c: -knn[c])[:keep]
        elif dearest:
            chosen = sorted(going, key=lambda c: -self.costs.train_seconds(
                c, 0, self.f.max_epochs))[:keep]
        else:
            return {c: p * keep / count for c, p in reach.items()}
        return {c: float(c in chosen) for c in reach}

    def _study(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # The candidates are part of the name: another --backbones / --transforms list is
        # another Optuna study (Optuna's categorical parameters have fixed choices).
        digest = hashlib.sha1(" ".join(c.key for c in self.cells).encode()).hexdigest()[:8]
        return optuna.create_study(study_name=f"stage-{self.name}-{digest}", storage=self.storage,
                                   direction="maximize", load_if_exists=True)

    def _trials(self, study):
        """{cell key: its latest trial}; a cell without one, or whose latest failed, gets a new
        one (its run folder, not the trial, holds the training done so far)."""
        from optuna.trial import TrialState

        keys = [c.key for c in self.cells]
        trials = {}
        for t in study.get_trials(deepcopy=False):
            if t.params.get("cell") in keys:
                trials[t.params["cell"]] = t
        for key in keys:
            if key not in trials or trials[key].state == TrialState.FAIL:
                study.enqueue_trial({"cell": key})
                trial = study.ask()
                trial.suggest_categorical("cell", keys)
                trials[trial.params["cell"]] = study.get_trials(deepcopy=False)[trial.number]
        return trials

    def _minimum_kept(self, rung_index):
        """Into the last rung go at least the --finalists cells (there is a runner-up)."""
        return self.f.finalists if rung_index + 2 == len(self.rungs) else 1

    def _train(self, cell, epochs, linear=False):
        scores = self.runner.scores(cell)
        done = scores.get(epochs, {})
        if not done or (linear and "linear_top1" not in done):  # work to do, not a read-back
            start = max([0] + [e for e in scores if e < epochs])
            estimate = (self.costs.train_seconds(cell, start, epochs)
                        + self.costs.probe_seconds(cell, linear))
            self.budget.check(estimate, f"stage {self.name}: {cell.key} to {epochs} epochs")
        for attempt in (1, 2):  # a failed cell is retried once (it resumes its checkpoint)
            try:
                return self.runner.run(cell, epochs, linear)
            except (KeyboardInterrupt, UsageError, OutOfBudget, CellBusy):
                raise
            except Exception as e:  # noqa: BLE001 - recorded, the study goes on
                message = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                self.log(f"  {cell.key}: FAILED (attempt {attempt}): {message}")
                logging.debug("cell failure", exc_info=True)
                _clear()
        self.failed[cell.key] = message
        return None

    def _train_when_free(self, cell, epochs, linear=False):
        """`_train`, waiting while another worker holds the cell (it may finish it, and its
        score is read back; or die, and the cell is trained here)."""
        while True:
            try:
                return self._train(cell, epochs, linear)
            except CellBusy:
                self.budget.check(BUSY_POLL_SECONDS, f"waiting for {cell.key}")
                time.sleep(BUSY_POLL_SECONDS)

    def _train_all(self, cells, epochs, linear=False, before=None):
        """{cell: result} of `_train` over cells; a cell another worker is training is left
        for last and waited for, so workers sharing the output folder split the rung."""
        results, busy = {}, []
        for cell in cells:
            if before:
                before(cell)
            try:
                results[cell] = self._train(cell, epochs, linear)
            except CellBusy:
                self.log(f"  {cell.key}: another worker is training it; coming back to it")
                busy.append(cell)
        for cell in busy:
            results[cell] = self._train_when_free(cell, epochs, linear)
        return results

    def run_halving(self):
        """Trains the rungs; returns the cells that reached --max_epochs, best first.

        Which cells go on is decided from the scores alone (kept in each cell's folder), so a
        rerun takes the same path without training; the Optuna trials record it (each rung's
        score reported, cut cells pruned, finishers completed with their last score)."""
        from optuna.trial import Trial, TrialState

        study = self._study()
        trials = self._trials(study)
        by_key = {c.key: c for c in self.cells}
        alive = [c.key for c in self.cells]
        for i, r in enumerate(self.rungs):
            pending = [k for k in alive if r not in self.runner.scores(by_key[k])]
            scores = {}

            def announce(cell, i=i, r=r, pending=pending):
                if cell.key in pending:
                    self.log(f"[stage {self.name}] rung {i + 1}/{len(self.rungs)} ({r} epochs): "
                             f"{cell.key} ({pending.index(cell.key) + 1} of {len(pending)}; "
                             f"{self.budget.left_text()} of the budget left)")
            results = self._train_all([by_key[k] for k in alive], r, before=announce)
            for key in alive:
                result = results[by_key[key]]
                trial = trials[key]
                if result is None:
                    if trial.state == TrialState.RUNNING:
                        _record(lambda n=trial.number: study.tell(n, state=TrialState.FAIL))
                    continue
                scores[key] = result["knn_top1"]
                if trial.state == TrialState.RUNNING and r not in trial.intermediate_values:
                    _record(lambda t=trial, v=scores[key], r=r:
                            Trial(study, t._trial_id).report(v, r))
            self.rung_scores[r] = dict(scores)
            last = i + 1 == len(self.rungs)
            kept = sorted(scores, key=lambda k: -scores[k]) if last else keep_best(
                scores, self.f.eta, self._minimum_kept(i))
            for key in scores:
                if trials[key].state == TrialState.RUNNING and (last or key not in kept):
                    number = trials[key].number
                    if key in kept:
                        _record(lambda n=number, v=scores[key]: study.tell(n, v))
                    else:
                        _record(lambda n=number: study.tell(n, state=TrialState.PRUNED))
            alive = kept
        return [by_key[k] for k in alive]

    def run(self):
        """Halving, then the finalists under --seeds seeds: returns the finalists' results."""
        survivors = self.run_halving()
        finalists = survivors[:self.f.finalists]
        def announce(seeded):
            if seeded.seed and self.f.max_epochs not in self.runner.scores(seeded):
                self.log(f"[stage {self.name}] finalist {seeded.backbone}/{seeded.transforms} "
                         f"seed {seeded.seed} ({self.budget.left_text()} of the budget left)")
        seeded = [c.with_seed(seed) for c in finalists for seed in range(self.f.seeds)]
        self.finalists = finalists
        done = self._train_all(seeded, self.f.max_epochs, linear=True, before=announce)
        return [{"cell": c, "runs": [done[s] for s in seeded if s.backbone == c.backbone
                                     and s.transforms == c.transforms and done[s] is not None]}
                for c in finalists]

    def finished_finalists(self):
        """The finalists' seeded runs scored so far (for a report cut short by the budget)."""
        out = []
        for cell in getattr(self, "finalists", []):
            runs = [self.runner.scores(cell.with_seed(seed)).get(self.f.max_epochs)
                    for seed in range(self.f.seeds)]
            out.append({"cell": cell, "runs": [r for r in runs if r and "linear_top1" in r]})
        return out


def _record(update):
    """Applies an update to the Optuna record, unless another worker sharing the storage has
    already finished that trial (the same cell, the same outcome)."""
    import optuna

    try:
        update()
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError) as e:
        logging.info("trial already recorded by another worker: %s", e)


class Budget:
    def __init__(self, hours):
        self.seconds = hours * 3600 if hours else math.inf
        self.started = time.time()

    def elapsed(self):
        return time.time() - self.started

    def left_text(self):
        return "unlimited" if self.seconds == math.inf else \
            duration(max(0.0, self.seconds - self.elapsed()))

    def check(self, estimate, what):
        if self.elapsed() + estimate > self.seconds:
            raise OutOfBudget(f"{what} (about {duration(estimate)}) would run past the budget "
                              f"({self.left_text()} left)")


# --- the whole study ------------------------------------------------------------------------

def machine():
    """CPU model, core count and whether int8 dot products are in hardware, for the report."""
    model, vnni = "unknown CPU", "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                      if line.startswith("model name")), model)
        vnni = "yes" if "avx512_vnni" in info or "avx_vnni" in info else "no"
    except OSError:
        pass
    return f"{model} ({socket.gethostname()}), {os.cpu_count()} cores, VNNI {vnni}"


def plan(flags, base, runner, costs, study_backbone, dearest=False):
    """{stage: estimated seconds} of what is left to run (stage C assumes the --top_k best
    combinations are jigsaw-like in cost, stage B the study backbone): the expected time, or
    with dearest=True the time when the dearest cells of every rung go on."""
    f = flags
    a = Stage("A", [Cell(b, "jigsaw") for b in f.backbones], runner, costs, Budget(0), f, None)
    b_cells = [Cell(study_backbone, t) for t in stage_b_cells(f.transforms)]
    b = Stage("B", b_cells, runner, costs, Budget(0), f, None)
    # Triples are chosen from B's first rung: up to four, costed as the first three transforms.
    triple = Cell(study_backbone, "+".join(f.transforms[:3]))
    b3 = Stage("B3", [triple] * (0 if len(f.transforms) < 3 else 1 if len(f.transforms) == 3
                                 else 3), runner, costs,
               Budget(0), f, None)
    c_cells = [Cell(bb, t) for bb in mobile_backbones(f.backbones) for t in f.transforms[:f.top_k]
               if bb != study_backbone]  # the study backbone's cells are B's
    c = Stage("C", c_cells, runner, costs, Budget(0), f, None)
    planned = set()
    # Stage D's conversions and timings are made (and cached) during calibration.
    return {"A": a.planned_seconds(planned, dearest),
            "B": b.planned_seconds(planned, dearest) + b3.planned_seconds(planned, dearest),
            "C": c.planned_seconds(planned, dearest), "D": 0.0}


def run_study(flags, base, log=print):
    """Runs (or continues) the study; returns what the report needs."""
    from mobile_pirl_tf import data, study_report

    f = flags
    os.makedirs(f.output_dir, exist_ok=True)
    storage = f.storage or f"sqlite:///{os.path.abspath(os.path.join(f.output_dir, 'study.db'))}"
    train_split, test_split = data.folder_splits(f.eval_data_dir)
    splits = (data.balanced_subset(train_split, f.eval_train_images, seed=0),
              data.balanced_subset(test_split, f.eval_test_images, seed=0))
    source = data.make_source(base.dataset, base.data_dir, base.tfds_data_dir)
    steps = source.num_examples // base.batch_size
    if base.steps_per_epoch:
        steps = min(steps, base.steps_per_epoch)
    runner = CellRunner(base, f.output_dir, f.max_epochs, splits)
    costs = Costs(os.path.join(f.output_dir, "costs.json"), base, steps,
                  len(splits[0].labels) + len(splits[1].labels))
    budget = Budget(f.budget_hours)
    scratch = os.path.join(f.output_dir, "calibration")
    kinds = {"patches"} | {Cell("", t).kind for t in stage_b_cells(f.transforms)}
    needed = {(b, kind) for b in f.backbones for kind in kinds}
    for backbone, kind in sorted(needed):
        costs.measure(backbone, kind, scratch, log)
    for backbone in f.backbones:  # stage D's figures: the architecture fixes them
        backbone_cost(backbone, base.image_size, source, (), os.path.join(f.output_dir, "costs"),
                      log)
    study_backbone = f.study_backbone or f.backbones[0]  # B's cost until A has a winner
    estimate = plan(f, base, runner, costs, study_backbone)
    dearest = plan(f, base, runner, costs, study_backbone, dearest=True)
    log(f"plan ({machine()}; {steps} steps per epoch, rungs "
        f"{rungs(f.min_epochs, f.max_epochs, f.eta)} epochs, {f.seeds} seeds for "
        f"{f.finalists} finalists per stage; expected time, and the time if the dearest cells "
        "go on at every rung):")
    for stage, seconds in estimate.items():
        note = (" (its conversions and timings were made during calibration)" if stage == "D"
                else f", up to {duration(dearest[stage])}")
        log(f"  stage {stage}: about {duration(seconds)}{note}")
    total, most = sum(estimate.values()), sum(dearest.values())
    fits = "within" if total <= budget.seconds else "OVER"
    log(f"  total: about {duration(total)}, up to {duration(most)} ({fits} the budget of "
        f"{budget.left_text()})")
    if most > budget.seconds:
        when = "will" if total > budget.seconds else "may (if dear cells go on)"
        log(f"  the study {when} stop at the budget with a partial report (a rerun continues); "
            "to fit, lower --max_epochs, --steps_per_epoch or --seeds, or pass fewer "
            "--backbones / --transforms")
    state = {"flags": {k: getattr(f, k) for k in FLAG_NAMES}, "base": dataclasses.asdict(base),
             "machine": machine(), "plan_seconds": estimate, "plan_seconds_dearest": dearest,
             "stages": {}, "stopped": None,
             "splits": {"train": len(splits[0].labels), "test": len(splits[1].labels)},
             "steps_per_epoch": steps, "costs": costs.table}
    if f.dry_run:
        return state
    try:
        _run_stages(f, base, runner, costs, budget, storage, state, source, log)
    except OutOfBudget as e:
        state["stopped"] = str(e)
        log(f"stopping at the budget: {e}; the report is partial (rerun to continue)")
    state["wall_seconds"] = round(budget.elapsed(), 1)
    study_report.write(f.output_dir, state, runner, log)
    return state


def _stage(name, cells, f, runner, costs, budget, storage, state, log):
    stage = Stage(name, cells, runner, costs, budget, f, storage, log)
    state["stages"][name] = {"cells": [c.key for c in cells], "rungs": stage.rungs,
                             "rung_scores": stage.rung_scores, "failed": stage.failed,
                             "finalists": []}
    started = time.time()
    try:
        results = stage.run()
    except OutOfBudget:
        state["stages"][name]["finalists"] = stage.finished_finalists()
        raise
    finally:
        state["stages"][name]["seconds"] = round(time.time() - started, 1)
    state["stages"][name]["finalists"] = results
    return results


def _best(results):
    """The finalist with the best mean linear top-1 (None when none has a score)."""
    from mobile_pirl_tf.study_report import summary

    scored = [(summary(r["runs"], "linear_top1")["mean"], i) for i, r in enumerate(results)
              if r["runs"]]
    return results[max(scored)[1]]["cell"] if scored else None


def _run_stages(f, base, runner, costs, budget, storage, state, source, log):
    a = _stage("A", [Cell(b, "jigsaw") for b in f.backbones], f, runner, costs, budget,
               storage, state, log)
    study_backbone = f.study_backbone or (_best(a) or Cell(f.backbones[0], "")).backbone
    state["study_backbone"] = study_backbone
    b_cells = [Cell(study_backbone, t) for t in stage_b_cells(f.transforms)]
    b = _stage("B", b_cells, f, runner, costs, budget, storage, state, log)
    state["baselines"] = baselines(study_backbone, base.image_size, runner, f, budget, log)
    rung0 = state["stages"]["B"]["rung_scores"].get(f.min_epochs, {})
    singles = {t: rung0[Cell(study_backbone, t).key] for t in f.transforms
               if Cell(study_backbone, t).key in rung0}
    pairs = {c.transforms: rung0[c.key] for c in b_cells if "+" in c.transforms
             and c.key in rung0}
    triples = stage_b_triples(singles, pairs, list(f.transforms)) if len(f.transforms) > 2 else []
    if triples:
        b3 = _stage("B3", [Cell(study_backbone, t) for t in triples], f, runner, costs, budget,
                    storage, state, log)
        b = b + b3
    ranked = sorted((r for r in b if r["runs"]), key=lambda r: -_mean(r, "linear_top1"))
    top = [r["cell"].transforms for r in ranked[:f.top_k]]
    state["top_transforms"] = top
    c_cells = [Cell(bb, t) for bb in mobile_backbones(f.backbones) for t in top]
    c = _stage("C", c_cells, f, runner, costs, budget, storage, state, log)
    # Stage D: the finalists of A (backbones with jigsaw) and of C, each cell once.
    state["stages"]["D"] = {"rows": []}
    finalists = {r["cell"].key: r for r in a + c if r["runs"]}
    for result in finalists.values():
        cost = backbone_cost(result["cell"].backbone, base.image_size, source, f.phone_results,
                             os.path.join(f.output_dir, "costs"), log)
        state["stages"]["D"]["rows"].append({"cell": result["cell"], "runs": result["runs"],
                                             **cost})


def baselines(backbone, image_size, runner, f, budget, log=print):
    """kNN top-1 of the random-init encoder and (with --supervised_minutes) of a supervised one
    trained for that long on the probe's train split: the heat-map's colour anchors. Cached in
    baselines.json."""
    path = os.path.join(runner.output_dir, "baselines.json")
    cached = read_json(path, {})
    key = f"{backbone}/{image_size}px/supervised{f.supervised_minutes}"
    if key in cached:
        return cached[key]
    from mobile_pirl_tf import baselines as baseline_encoders
    from mobile_pirl_tf import features, probes

    budget.check(60 * f.supervised_minutes + 60, "the baselines")
    train, test = runner.train_split, runner.test_split

    def knn(encoder):
        train_f, test_f = features.features_for(encoder, "", train, test, image_size, None,
                                                probes.BN_RECALIBRATION_IMAGES)
        return probes.evaluate_features("knn", train_f, train.labels, test_f, test.labels,
                                        len(train.classes))["top1"]

    log(f"[baselines] random-init {backbone}")
    out = {"random": knn(baseline_encoders.random_encoder(backbone, image_size))}
    if f.supervised_minutes:
        log(f"[baselines] supervised {backbone}, {f.supervised_minutes} min")
        encoder, _ = baseline_encoders.supervised_encoder(
            backbone, image_size, train, epochs=1000, budget_seconds=60 * f.supervised_minutes,
            verbose=0)
        out["supervised"] = knn(encoder)
    _clear()
    cached[key] = out
    write_json(path, cached)
    return out


def _mean(result, metric):
    from mobile_pirl_tf.study_report import summary

    return summary(result["runs"], metric)["mean"]


def backbone_cost(backbone, image_size, source, phone_results, cache_dir, log=print):
    """Parameters, multiply-adds, LiteRT file sizes and host latency (float32 and post-training
    int8, 1 thread, median of 50), and phone latency from benchmark_phone.py JSON files when
    given. Cached per backbone in cache_dir (the architecture fixes them, not the weights)."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"{backbone}-{image_size}px.json")
    row = read_json(path)
    if row is None:
        from mobile_pirl_tf import backbones, complexity, data, tflite

        log(f"[stage D] cost of {backbone}: converting and timing")
        encoder = backbones.build_encoder(backbones.build_backbone(backbone), image_size)
        calibration = data.sample_images(source, 200, image_size, seed=0)
        row = {"params": encoder.count_params(), "macs": complexity.count_macs(encoder,
                                                                               image_size)}
        for variant in ("float32", "int8"):
            flatbuffer = tflite.convert(encoder, variant, calibration)
            row[f"{variant}_bytes"] = len(flatbuffer)
            row[f"{variant}_ms"] = tflite.measure_latency(flatbuffer, 1, runs=50)["median_ms"]
        write_json(path, row)
        _clear()
    row = dict(row)
    phone = phone_latency(phone_results or ()).get((backbone, "int8"))
    if phone is not None:
        row["phone_int8_ms"] = phone
    return row


def phone_latency(json_paths):
    """{(backbone, variant): inference_avg_ms} of export/benchmark_phone.py results: the variant
    is the timed file's name (int8.tflite -> int8), the backbone the one named in the
    report.json that export/to_tflite.py wrote beside it."""
    out = {}
    for json_path in json_paths:
        result = read_json(json_path)
        model = result.get("model", "")
        report = read_json(os.path.join(os.path.dirname(model), "report.json"))
        if report is None:
            raise UsageError(f"--phone_results={json_path}: no report.json beside {model} names "
                             "its backbone; time files that export/to_tflite.py wrote")
        backbone = report.get("backbone")
        variant = os.path.splitext(os.path.basename(model))[0]
        out[(backbone, variant)] = result["inference_avg_ms"]
    return out


# --- command line ---------------------------------------------------------------------------

FLAG_NAMES = ("backbones", "transforms", "study_backbone", "seeds", "finalists", "top_k",
              "min_epochs", "max_epochs", "eta", "budget_hours", "eval_data_dir",
              "eval_train_images", "eval_test_images", "output_dir", "storage", "dry_run",
              "phone_results", "supervised_minutes")


def define_flags():
    from absl import flags

    flags.DEFINE_list("backbones", list(DEFAULT_BACKBONES), "Backbones of stages A and C "
                      f"({REFERENCE_BACKBONE} is the reference).")
    flags.DEFINE_list("transforms", list(DEFAULT_TRANSFORMS), "Transforms of stage B (singles, "
                      "pairs, chosen triples).")
    flags.DEFINE_string("study_backbone", None, "Backbone of stage B (default: stage A's "
                        "winner).")
    flags.DEFINE_integer("seeds", 3, "Seeds of each stage's finalists.")
    flags.DEFINE_integer("finalists", 2, "Cells of each stage re-run under --seeds seeds.")
    flags.DEFINE_integer("top_k", 2, "Best combinations of stage B trained on every backbone "
                         "in stage C.")
    flags.DEFINE_integer("min_epochs", 1, "Epochs of the first successive-halving rung.")
    flags.DEFINE_integer("max_epochs", 9, "Epochs of the last rung (and the schedule of all).")
    flags.DEFINE_integer("eta", 3, "Successive halving keeps the best 1/eta of each rung.")
    flags.DEFINE_float("budget_hours", 0.0, "Stop this invocation before it runs past this "
                       "many hours, with a partial report (0: no limit).")
    flags.DEFINE_integer("eval_train_images", 0, "Class-balanced subset of the labelled train "
                         "split used by the probes (0: all).")
    flags.DEFINE_integer("eval_test_images", 0, "Class-balanced subset of the test split (0: "
                         "all).")
    flags.DEFINE_string("storage", None, "Optuna storage URL (default: sqlite:///"
                        "<output_dir>/study.db; an RDB URL lets several machines share it).")
    flags.DEFINE_float("supervised_minutes", 0.0, "Train a supervised baseline of the stage-B "
                       "backbone for this long (the heat-map's upper colour anchor; 0: none).")
    flags.DEFINE_bool("dry_run", False, "Measure the costs, print the plan and stop.")
    flags.DEFINE_list("phone_results", [], "JSON files of export/benchmark_phone.py to read "
                      "phone latency from.")
    cli.show_in_help("Study", *[n for n in FLAG_NAMES if n not in ("eval_data_dir",
                                                                  "output_dir")])
    cli.define_common("eval_data_dir", "output_dir", group="Study", output_dir="runs/study")
    cli.define_flags(config.TrainConfig, exclude=("transforms", "model_dir", "monitor_data_dir",
                                                  "monitor_every", "epochs", "schedule_epochs",
                                                  "backbone", "seed"))


def validate(f):
    for name in f.backbones:
        config.check_backbone(name)
    for name in f.transforms:
        config.parse_transforms(name)
    if len(set(f.transforms)) != len(f.transforms):
        raise UsageError("--transforms lists a transform twice")
    checks = [(f.seeds >= 1, "--seeds must be at least 1"),
              (f.finalists >= 1, "--finalists must be at least 1"),
              (f.top_k >= 1, "--top_k must be at least 1"),
              (1 <= f.min_epochs <= f.max_epochs, "--min_epochs must be in [1, --max_epochs]"),
              (f.eta >= 2, "--eta must be at least 2"),
              (f.budget_hours >= 0, "--budget_hours must be >= 0"),
              (bool(f.eval_data_dir), "--eval_data_dir is required: a folder with "
                                      "train/<class>/ and test/<class>/")]
    config.check(checks)
    if f.study_backbone:
        config.check_backbone(f.study_backbone)


def main(argv):
    del argv
    f = cli.FLAGS
    logging.getLogger().setLevel(logging.WARNING)
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)  # retracing notices: every cell builds a new model
    validate(f)
    base = cli.config_from_flags(config.TrainConfig, transforms="jigsaw", model_dir="",
                                 backbone=f.backbones[0]).validate()
    run_study(f, base)


if __name__ == "__main__":
    define_flags()
    cli.run(main, __doc__)
