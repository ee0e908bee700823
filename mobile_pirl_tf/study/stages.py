"""The study's stages, in order, as one object (`Study`), and what they decide (`StudyState`).

    A   every --backbones entry with jigsaw, confirmed under seeds 1..N (paired), each with its
        random-init baseline; the planned comparisons: the best arm against each other arm.
    B   on the study backbone (--study_backbone, else A's best): a one-seed screen (seed 0) of
        every single transformation and every pair (and --triples), scored by the linear probe
        at the full length; the --confirm best, and jigsaw, confirmed under seeds 1..N; the
        best confirmed arm against each other. The first --pilot_cells screen cells also run at
        --pilot_epochs (the rank check).
    C   every other mobile backbone with B's --top_k best combinations, seeds 1..N, each against
        the same backbone with jigsaw (stage A's arm: the same seeds, so paired).
    R   the reference (--reference_backbone, ResNet-50) with jigsaw, once (seed 1), at
        --reference_epochs: a measured yardstick, not an arm that competes.
    D   parameters, multiply-adds, LiteRT size and latency of every backbone (`footprint`).
    +   while budget remains, one more seed for both arms of each inconclusive top comparison
        (each stage's first), up to --max_seeds;
    L   --long_epochs for B's confirmed arms (the rank check at a longer length);
    +   then the same for the other inconclusive comparisons, in stage order.

Seed 0 selects (the screen) and never scores a selected cell; every confirmed arm is scored
under the same seeds 1..N, so each comparison is a paired difference (`stats`). Everything is
read back from the runs' records, so an invocation cut by the budget, or on another machine,
continues where the last stopped.
"""

import dataclasses
import itertools
import logging
import time
from typing import Dict, List, Optional

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.study import stats
from mobile_pirl_tf.study.cells import Cell, CellBusy, Run, clear_session
from mobile_pirl_tf.study.costs import OutOfBudget

BUSY_POLL_SECONDS = 15.0


def screen_cells(names):
    """Singles, then unordered pairs of `names` (a pair applied in the listed order)."""
    return list(names) + [f"{a}+{b}" for a, b in itertools.combinations(names, 2)]


def screen_triples(single_scores, pair_scores, names, pairs=2):
    """The `pairs` best pairs, each extended by each of the three best singles it lacks, in the
    order of `names`."""
    best_singles = sorted(single_scores, key=lambda s: -single_scores[s])[:3]
    triples = []
    for pair in sorted(pair_scores, key=lambda p: -pair_scores[p])[:pairs]:
        parts = pair.split("+")
        for single in best_singles:
            if single not in parts:
                triple = "+".join(sorted(parts + [single], key=names.index))
                if triple not in triples:
                    triples.append(triple)
    return triples


@dataclasses.dataclass
class StudyState:
    """What the stages decided so far, for the report (the scores are in the records)."""
    study_backbone: Optional[str] = None
    screen: List[str] = dataclasses.field(default_factory=list)       # B's screened transforms
    confirmed_b: List[str] = dataclasses.field(default_factory=list)  # B's confirmed transforms
    top_transforms: List[str] = dataclasses.field(default_factory=list)
    failed: Dict[str, str] = dataclasses.field(default_factory=dict)  # run key -> error
    seconds: Dict[str, float] = dataclasses.field(default_factory=dict)  # stage -> this call
    stopped: Optional[str] = None
    footprints: Dict[str, dict] = dataclasses.field(default_factory=dict)


class Study:
    """Runs the stages (module docstring) with a `CellRunner`, spending a `Budget`.

    Args:
      config: the `StudyConfig`.
      runner: the `cells.CellRunner` that trains and scores runs (and reads records back).
      costs: the `costs.Costs` estimating each run.
      budget: the `costs.Budget` of this invocation.
      footprint: backbone -> its stage-D row (parameters, MACs, sizes, latency).
      record: optional callback record(stage, role, run, result) (the Optuna log).
      log: where progress lines go.
    """

    def __init__(self, config, runner, costs, budget, footprint=None, record=None, log=print):
        self.c, self.runner, self.costs, self.budget = config, runner, costs, budget
        self.footprint, self.on_record, self.log = footprint, record, log
        self.state = StudyState()

    # --- arms and comparisons, from the records --------------------------------------------

    def arm_scores(self, cell, metric="linear_top1"):
        """{seed: score} of a confirmed arm: every recorded seed >= 1 at --epochs."""
        scores = {}
        for seed in range(1, self.c.max_seeds + 1):
            record = self.runner.record(Run(cell, seed, self.c.epochs))
            if record and record.get(metric) is not None:
                scores[seed] = record[metric]
        return scores

    def arms(self, stage):
        """The confirmed arms of a stage, as cells."""
        if stage == "A":
            return [Cell(b, "jigsaw") for b in self.c.backbones]
        if stage == "B" and self.state.study_backbone:
            return [Cell(self.state.study_backbone, t) for t in self.state.confirmed_b]
        if stage == "C" and self.state.study_backbone:
            return [Cell(b, t) for b in self.c.backbones if b != self.state.study_backbone
                    for t in self.state.top_transforms + ["jigsaw"]]
        return []

    def comparisons(self, stage):
        """The stage's planned comparisons, Holm-corrected over the stage: A and B compare
        their best arm (by mean) with each other arm (the first is the stage's top comparison:
        the best against the runner-up); C compares each backbone's combination with the
        same backbone's jigsaw."""
        arms = {cell: self.arm_scores(cell) for cell in self.arms(stage)}
        if stage == "C":
            pairs = [(Cell(b, t), Cell(b, "jigsaw")) for b in self.c.backbones
                     if b != self.state.study_backbone for t in self.state.top_transforms
                     if t != "jigsaw"]
        else:
            ranked = sorted((c for c in arms if arms[c]),
                            key=lambda c: -stats.summarize(arms[c].values()).mean)
            pairs = [(ranked[0], other) for other in ranked[1:]]
        out = [stats.compare(a.label, arms[a], b.label, arms[b], self.c.margin, self.c.alpha)
               for a, b in pairs]
        return stats.holm(out)

    # --- running ---------------------------------------------------------------------------

    def _run(self, stage, role, run):
        """The run's record (trained now, or read back); None when it failed twice."""
        done = self.runner.record(run)
        if done is None:
            self.budget.check(self.costs.run_seconds(run.cell, run.epochs),
                              f"stage {stage}: {run.key}")
            self.log(f"[stage {stage}] {role} {run.key} ({self.budget.text()})")
        for attempt in (1, 2):  # a failed run is retried once (it resumes its checkpoint)
            try:
                result = self.runner.run(run)
                break
            except (KeyboardInterrupt, UsageError, OutOfBudget, CellBusy):
                raise
            except Exception as e:  # noqa: BLE001 - recorded, the study goes on
                message = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                self.log(f"  {run.key}: FAILED (attempt {attempt}): {message}")
                logging.debug("run failure", exc_info=True)
                clear_session()
        else:
            self.state.failed[run.key] = message
            return None
        if done is None:
            self.costs.observe(run.cell, result)
        if self.on_record:
            self.on_record(stage, role, run, result)
        return result

    def run_all(self, stage, role, runs):
        """{run: record or None}; a run another worker holds is left for last and waited for,
        so workers sharing the folders split the list."""
        results, busy = {}, []
        for run in runs:
            try:
                results[run] = self._run(stage, role, run)
            except CellBusy:
                self.log(f"  {run.key}: another worker is training it; coming back to it")
                busy.append(run)
        for run in busy:
            while True:
                try:
                    results[run] = self._run(stage, role, run)
                    break
                except CellBusy:
                    self.budget.check(BUSY_POLL_SECONDS, f"waiting for {run.key}")
                    time.sleep(BUSY_POLL_SECONDS)
        return results

    def _confirm(self, stage, cells):
        seeds = self.c.confirmation_seeds
        self.run_all(stage, "confirm", [Run(c, s, self.c.epochs) for c in cells for s in seeds])

    def baselines(self, backbones):
        for backbone in backbones:
            if self.runner.record_baseline(backbone) is None:
                self.budget.check(self.costs.probe_seconds(backbone) + 30,
                                  f"random-init {backbone}")
                self.log(f"[baselines] random-init {backbone} ({self.budget.text()})")
            self.runner.baseline(backbone)

    def stage_a(self):
        self.baselines(self.c.backbones)
        self._confirm("A", self.arms("A"))

    def choose_study_backbone(self):
        if self.c.study_backbone:
            return self.c.study_backbone
        scored = {c: self.arm_scores(c) for c in self.arms("A")}
        scored = {c: stats.summarize(s.values()).mean for c, s in scored.items() if s}
        return max(scored, key=scored.get).backbone if scored else self.c.backbones[0]

    def screen_score(self, transforms, epochs=None):
        record = self.runner.record(Run(Cell(self.state.study_backbone, transforms), 0,
                                        epochs or self.c.epochs))
        return None if record is None else record.get("linear_top1")

    def stage_b(self, train=True):
        """The screen, the pilot and the confirmation of stage B, with its choices; with
        `train=False` only the choices the records already decide (nothing is trained), so a
        plan made before the stages rerun costs only what is left."""
        backbone = self.state.study_backbone = self.choose_study_backbone()
        run_all = self.run_all if train else lambda *_: None
        if train:
            self.baselines([backbone])
        names = list(self.c.transforms)
        screen = screen_cells(names)
        self.state.screen = list(screen)
        run_all("B", "screen", [Run(Cell(backbone, t), 0, self.c.epochs) for t in screen])
        if self.c.pilot_epochs and self.c.pilot_cells:
            run_all("B", "pilot", [Run(Cell(backbone, t), 0, self.c.pilot_epochs)
                                   for t in screen[:self.c.pilot_cells]])
        scores = {t: self.screen_score(t) for t in screen}
        if self.c.triples and len(names) > 2:
            singles = {t: scores[t] for t in names if scores[t] is not None}
            pairs = {t: s for t, s in scores.items() if "+" in t and s is not None}
            triples = screen_triples(singles, pairs, names, self.c.triples)
            self.state.screen += triples
            run_all("B", "screen", [Run(Cell(backbone, t), 0, self.c.epochs) for t in triples])
            scores.update({t: self.screen_score(t) for t in triples})
        if not train and None in scores.values():
            return  # the screen is not complete: nothing is chosen yet
        ranked = sorted((t for t, s in scores.items() if s is not None), key=lambda t: -scores[t])
        confirmed = ranked[:self.c.confirm]
        if "jigsaw" in names and "jigsaw" not in confirmed:
            confirmed.append("jigsaw")  # the paper's pretext, the yardstick of every other
        self.state.confirmed_b = confirmed
        if train:
            self._confirm("B", self.arms("B"))
        elif any(set(self.c.confirmation_seeds) - set(self.arm_scores(cell))
                 for cell in self.arms("B")):
            return  # the confirmation is not complete: the best is not chosen yet
        means = {t: stats.summarize(self.arm_scores(Cell(backbone, t)).values()).mean
                 for t in confirmed}
        self.state.top_transforms = sorted((t for t in confirmed if means[t] == means[t]),
                                           key=lambda t: -means[t])[:self.c.top_k]

    def stage_c(self):
        others = [b for b in self.c.backbones if b != self.state.study_backbone]
        self._confirm("C", [Cell(b, t) for b in others for t in self.state.top_transforms
                            if t != "jigsaw"])

    def reference(self):
        if not self.c.reference_backbone:
            return
        self.baselines([self.c.reference_backbone])
        self.run_all("R", "reference", [self.reference_run()])

    def reference_run(self):
        return Run(Cell(self.c.reference_backbone, "jigsaw"), 1,
                   self.c.reference_epochs or self.c.epochs)

    def stage_d(self):
        if self.footprint is None:
            return
        backbones = list(self.c.backbones) + ([self.c.reference_backbone]
                                              if self.c.reference_backbone else [])
        for backbone in backbones:
            self.state.footprints[backbone] = self.footprint(backbone)

    def extra_seeds(self, tops_only=False):
        """One more seed for both arms of the first inconclusive comparison that can take one
        (the stages' top comparisons first, then, unless `tops_only`, the others in stage
        order), until none is left; the seed that selected a cell (0) is never added."""
        while True:
            families = [self.comparisons(stage) for stage in ("A", "B", "C")]
            ordered = [f[0] for f in families if f]
            if not tops_only:
                ordered += [c for f in families for c in f[1:]]
            todo = next((c for c in ordered if not c.decided and c.n < self.c.max_seeds), None)
            if todo is None:
                return
            stage = next(s for s, f in zip(("A", "B", "C"), families) if todo in f)
            seed = min(s for s in range(1, self.c.max_seeds + 1) if s not in todo.seeds)
            results = self.run_all(stage, "extra seed", [
                Run(self._cell(label), seed, self.c.epochs) for label in (todo.a, todo.b)])
            if any(r is None for r in results.values()):  # failed: do not ask again
                return

    @staticmethod
    def _cell(label):
        backbone, transforms = label.split("/", 1)
        return Cell(backbone, transforms)

    def long_check(self):
        if not self.c.long_epochs or not self.state.study_backbone:
            return
        self.run_all("B", "long", self.long_runs())

    def long_runs(self):
        """The rank check's runs: B's confirmed arms at --long_epochs, seed 1."""
        return [Run(cell, 1, self.c.long_epochs) for cell in self.arms("B")]

    def run(self):
        """Runs (or continues) every stage; a stage cut by the budget stops the study with
        `state.stopped` set (the report is then partial)."""
        steps = (("A", self.stage_a), ("B", self.stage_b), ("C", self.stage_c),
                 ("R", self.reference), ("D", self.stage_d),
                 ("+", lambda: self.extra_seeds(tops_only=True)), ("L", self.long_check),
                 ("+", self.extra_seeds))
        for name, step in steps:
            started = time.time()
            try:
                step()
            except OutOfBudget as e:
                self.state.stopped = str(e)
                self.log(f"stopping at the budget: {e}; the report is partial (rerun to "
                         "continue)")
                return self.state
            finally:
                self.state.seconds[name] = round(self.state.seconds.get(name, 0)
                                                 + time.time() - started, 1)
        return self.state
