"""The plan: what is left to run, what it costs, and what the budget buys.

For each stage, the runs not recorded yet and their expected time (a cell whose choice depends
on results not known yet is costed as the average cell it could be) and an upper figure (as
the dearest it could be); then what the seeds buy: the smallest paired difference the
comparisons can detect with 80% power at the assumed spread of a paired difference (the
spread measured so far once two arms share two seeds, else `ASSUMED_PAIR_SD`).
"""

import dataclasses
import math
import os

from mobile_pirl_tf.core.progress import duration
from mobile_pirl_tf.study import stats
from mobile_pirl_tf.study.cells import Cell, Run
from mobile_pirl_tf.study.costs import CONVERSION_SECONDS
from mobile_pirl_tf.study.footprint import footprint_path
from mobile_pirl_tf.study.stages import screen_cells

# The sd of the paired difference of two arms' linear top-1 (points) assumed before the study
# has measured one: the seed spread of the default recipe is 1.0-1.15 points (REFERENCE.md,
# section 5), and the test split's sampling adds about 0.8 to each arm.
ASSUMED_PAIR_SD = 1.2


@dataclasses.dataclass
class StagePlan:
    runs: int          # runs left to train
    expected: float    # seconds
    upper: float       # seconds, the dearest choices


def _plan_runs(costs, runner, runs, dearest=None):
    """(runs left, expected seconds, upper seconds) of [(run, weight)] (weight: the chance it
    runs); `dearest`: an alternative cell costing the upper figure."""
    left, expected, upper = 0, 0.0, 0.0
    for run, weight in runs:
        if runner.record(run) is not None:
            continue
        left += 1
        seconds = costs.run_seconds(run.cell, run.epochs)
        expected += weight * seconds
        dear = costs.run_seconds(dearest, run.epochs) if dearest else seconds
        upper += max(seconds, dear)
    return left, expected, upper


def plan(study):
    """{stage: StagePlan} of what is left, for a `stages.Study` (nothing is run)."""
    c, costs, runner, state = study.c, study.costs, study.runner, study.state
    if not state.confirmed_b:
        study.stage_b(train=False)  # what the records already chose (a resumed study)
    seeds = c.confirmation_seeds
    out = {}
    a_runs = [(Run(cell, s, c.epochs), 1.0) for cell in study.arms("A") for s in seeds]
    out["A"] = StagePlan(*_plan_runs(costs, runner, a_runs))
    backbone = state.study_backbone or c.study_backbone or c.backbones[0]
    names = list(c.transforms)
    screen = screen_cells(names)
    cells = [Cell(backbone, t) for t in screen]
    dearest = max(cells, key=lambda cell: costs.run_seconds(cell, c.epochs))
    b_runs = [(Run(cell, 0, c.epochs), 1.0) for cell in cells]
    b_runs += [(Run(cell, 0, c.pilot_epochs), 1.0)
               for cell in cells[:c.pilot_cells] if c.pilot_epochs]
    n_triples = (min(3 * c.triples, len(names) * (len(names) - 1) // 2)
                 if c.triples and len(names) > 2 else 0)
    average = sum(costs.run_seconds(cell, c.epochs) for cell in cells) / len(cells)
    runs, expected, upper = _plan_runs(costs, runner, b_runs)
    chosen = state.confirmed_b or []
    if chosen:
        confirm = [(Run(Cell(backbone, t), s, c.epochs), 1.0) for t in chosen for s in seeds]
        more = _plan_runs(costs, runner, confirm)
    else:  # not chosen yet: the average screen cell, or the dearest
        jigsaw_shared = backbone in c.backbones and "jigsaw" in names
        count = (c.confirm + (0 if jigsaw_shared else 1)) * len(seeds) + n_triples
        more = (count, count * average, count * costs.run_seconds(dearest, c.epochs))
    out["B"] = StagePlan(runs + more[0], expected + more[1], upper + more[2])
    others = [b for b in c.backbones if b != backbone]
    if state.top_transforms:
        c_runs = [(Run(Cell(b, t), s, c.epochs), 1.0) for b in others
                  for t in state.top_transforms if t != "jigsaw" for s in seeds]
        out["C"] = StagePlan(*_plan_runs(costs, runner, c_runs))
    else:
        kinds = [Cell(b, "crop") for b in others]   # an image-view combination, or jigsaw's
        count = len(others) * c.top_k * len(seeds)
        exp = sum(0.5 * (costs.run_seconds(cell, c.epochs)
                         + costs.run_seconds(Cell(cell.backbone, "jigsaw"), c.epochs))
                  for cell in kinds) * c.top_k * len(seeds)
        up = sum(costs.run_seconds(Cell(b, "jigsaw"), c.epochs) for b in others) \
            * c.top_k * len(seeds)
        out["C"] = StagePlan(count, exp, up)
    if c.reference_backbone:
        out["R"] = StagePlan(*_plan_runs(costs, runner, [(study.reference_run(), 1.0)]))
    backbones = list(c.backbones) + ([c.reference_backbone] if c.reference_backbone else [])
    baselines = [b for b in set(backbones + [backbone]) if runner.record_baseline(b) is None]
    converted = [b for b in backbones if study.state.footprints.get(b) or os.path.exists(
        footprint_path(c.output_dir, b, runner.base.image_size))]
    d_seconds = sum(costs.probe_seconds(b) + 30 for b in baselines) + CONVERSION_SECONDS * (
        len(backbones) - len(converted))
    out["D"] = StagePlan(len(baselines), d_seconds, d_seconds)
    if c.long_epochs and chosen:
        out["L"] = StagePlan(*_plan_runs(costs, runner, [(r, 1.0) for r in study.long_runs()]))
    elif c.long_epochs:  # B's arms not chosen yet: the image-view cost of its arms
        seconds = (c.confirm + 1) * costs.run_seconds(Cell(backbone, "crop"), c.long_epochs)
        out["L"] = StagePlan(c.confirm + 1, seconds, seconds * 1.3)
    return out


def measured_pair_sd(study):
    """The pooled sd of paired differences measured so far (points), or None."""
    comparisons = [x for stage in ("A", "B", "C") for x in study.comparisons(stage)]
    sd = stats.pooled_sd(comparisons)
    return None if sd is None else 100 * sd


def describe(study, plans):
    """The plan as lines of text: per stage, the total against the budget, what the seeds buy."""
    c, budget = study.c, study.budget
    names = {"A": "A  backbones x jigsaw", "B": "B  screen + confirmation",
             "C": "C  backbones x best combination", "R": f"R  reference {c.reference_backbone}",
             "D": "D  baselines, conversions, latency", "L": "L  long-length rank check"}
    measured = all(study.costs.measured(b) for b in c.backbones)
    source = ("measured costs" if measured else
              "DEFAULT costs: run --calibrate to measure this machine")
    lines = [f"plan ({source}; runs of {c.epochs} epochs of {study.costs.steps_per_epoch} "
             f"steps, seeds 1..{c.seeds}, up to {c.max_seeds}):"]
    for stage, p in plans.items():
        lines.append(f"  {names[stage]}: {p.runs} runs left, about {duration(p.expected)}"
                     + (f", up to {duration(p.upper)}" if p.upper > p.expected + 1 else ""))
    total = sum(p.expected for p in plans.values())
    upper = sum(p.upper for p in plans.values())
    lines.append(f"  total: about {duration(total)}, up to {duration(upper)}; budget "
                 + (f"{duration(budget.seconds)} ({duration(max(0, budget.left()))} left)"
                    if budget.seconds != math.inf else "unlimited"))
    sd = measured_pair_sd(study)
    source = "measured" if sd else "assumed"
    sd = sd or ASSUMED_PAIR_SD
    mdd = 100 * stats.detectable_difference(sd / 100, c.seeds, c.alpha)
    mdd_max = 100 * stats.detectable_difference(sd / 100, c.max_seeds, c.alpha)
    lines.append(f"  what the seeds buy: with {c.seeds} paired seeds a comparison detects a "
                 f"difference of {mdd:.1f} points (80% power, alpha {c.alpha}, {source} sd of a "
                 f"paired difference {sd:.2f} points), {mdd_max:.1f} at {c.max_seeds} seeds; "
                 f"equivalence within +-{c.equivalence_margin:g} needs the interval inside it")
    left = budget.left() - total
    if budget.seconds != math.inf:
        if left < 0:
            lines.append("  the budget runs out before the plan ends: the study will stop with "
                         "a partial report (a rerun continues); fewer --backbones, "
                         "--transforms or --seeds, or a shorter --epochs, would fit")
        else:
            a = [Cell(b, "jigsaw") for b in c.backbones[:2]]
            pair = sum(study.costs.run_seconds(x, c.epochs) for x in a)
            lines.append(f"  after the plan, the budget buys about {int(left // pair)} more "
                         "seeds for inconclusive comparisons (one seed: both arms)")
    return lines
