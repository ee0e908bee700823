"""The contingency sweep of pretext transformations (the proposal's Fig. 3).

    python -m mobile_pirl_tf.study.sweep --backbone=mobilenetv3small --image_size=64 \\
        --transforms=crop,cutout,color,sobel --data_dir=$DATA/imagenette/train \\
        --eval_data_dir=$DATA/imagenette --epochs=3 --output_dir=runs/sweep \\
        [--extra_cells=jigsaw,jigsaw+rotation]

Trains PIRL once per cell: every transform alone and every unordered pair (applied in the order
the transforms are listed: for crop,color the pair is crop+color), all with the same budget
(epochs, steps per epoch, batch and every other flag), then runs the linear probe of
`probes` on each encoder. `--extra_cells` adds named compositions (for example the jigsaw
baselines) trained and probed the same way, listed in the table but not in the heat-map.

Writes to --output_dir:
    cells/<backbone>/<spec>/seed<N>-<E>ep/
                       each cell's PIRL run (resumable: a rerun continues an interrupted cell;
                       the runner is the study's, `study.cells.CellRunner`: this sweep is the
                       study's stage-B screen at one fixed length, without confirmation)
    records/           one JSON record per scored cell (the runner's)
    results.csv        one row per cell: spec, first, second, status, top1, top5, seconds,
                       error, and every training flag
    heatmap.png        rows: first transform, columns: second, diagonal: the transform alone,
                       linear-probe top-1 (%) printed in each cell

Finished cells are read back from results.csv and not recomputed; a cell that fails is recorded
(status "failed" and its one-line error) and the sweep goes on; a rerun retries it. A usage
error (a bad flag, a missing data set), which would fail every cell, stops the sweep at once.
"""

import csv
import dataclasses
import itertools
import os
import time

from mobile_pirl_tf.core.config import parse_transforms
from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.core.progress import duration
from mobile_pirl_tf.core.records import atomic_write
from mobile_pirl_tf.study import figures
from mobile_pirl_tf.study.cells import Cell, CellRunner, Run

RESULT_FIELDS = ["spec", "first", "second", "status", "top1", "top5", "knn_top1", "seconds",
                 "error"]


def cells(names, extra=()):
    """[(spec, first, second)]: singles, unordered pairs in the listed order, then extras."""
    out = [(n, n, "") for n in names]
    out += [(f"{a}+{b}", a, b) for a, b in itertools.combinations(names, 2)]
    out += [(spec, spec, "") for spec in extra]
    return out


def read_results(path):
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        return {row["spec"]: row for row in csv.DictReader(f)}


def write_results(path, rows, flag_fields):
    with atomic_write(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_FIELDS + flag_fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def run_cell(runner, base_config, spec):
    """Trains and probes one cell with a cell runner; returns its result fields."""
    started = time.time()
    result = runner.run(Run(Cell(base_config.backbone, spec), base_config.seed,
                            base_config.epochs))
    return {"status": "done", "top1": f"{result['linear_top1']:.6f}",
            "top5": "" if result.get("linear_top5") is None else f"{result['linear_top5']:.6f}",
            "knn_top1": f"{result['knn_top1']:.6f}", "seconds": f"{time.time() - started:.1f}",
            "error": ""}


def run_sweep(base_config, names, eval_data_dir, output_dir, extra=(), log=print, runner=None):
    """Runs every cell not finished yet; returns the result rows (also in results.csv).

    Args:
      base_config: the `TrainConfig` of every cell (its transforms are set per cell).
      names: the single transformations; every one and every unordered pair is a cell.
      eval_data_dir: the labelled folder of the linear probe.
      output_dir: results.csv, records/ and the cells' run folders.
      extra: further compositions trained and probed the same way.
      runner: a `cells.CellRunner` (tests inject one); by default one over output_dir.
    """
    if not names:
        raise UsageError("--transforms is empty; name at least one transformation")
    for spec in list(names) + list(extra):
        parse_transforms(spec)
    if len(set(names)) != len(names):
        raise UsageError("--transforms lists a transform twice")
    base_config = dataclasses.replace(base_config, transforms=names[0]).validate()
    os.makedirs(output_dir, exist_ok=True)
    if runner is None:
        from mobile_pirl_tf.data import labelled

        runner = CellRunner(base_config, output_dir, os.path.join(output_dir, "cells"),
                            labelled.folder_splits(eval_data_dir), log=log)
    path = os.path.join(output_dir, "results.csv")
    previous = read_results(path)
    flags = {k: v for k, v in dataclasses.asdict(base_config).items()
             if k not in ("transforms", "model_dir", "verbose")}
    flag_fields = sorted(flags)
    todo = cells(names, extra)
    rows, durations = [], []
    pending = [spec for spec, _, _ in todo if previous.get(spec, {}).get("status") != "done"]
    log(f"sweep: {len(todo)} cells, {len(todo) - len(pending)} already done, "
        f"{len(pending)} to run -> {path}")
    for spec, first, second in todo:
        row = {"spec": spec, "first": first, "second": second, **flags}
        if previous.get(spec, {}).get("status") == "done":
            rows.append({**previous[spec], **{k: row[k] for k in ("first", "second")}})
            continue
        left = len(pending) - len(durations)
        eta = (f", about {duration(sum(durations) / len(durations) * left)} left"
               if durations else "")
        log(f"[cell {len(durations) + 1}/{len(pending)}] {spec}: running ({left} left{eta})")
        started = time.time()
        try:
            row.update(run_cell(runner, base_config, spec))
            log(f"[cell {len(durations) + 1}/{len(pending)}] {spec}: top1 "
                f"{100 * float(row['top1']):.2f}% in {duration(time.time() - started)}")
        except (KeyboardInterrupt, UsageError):  # a bad flag or data set fails every cell: stop
            raise
        except Exception as e:  # noqa: BLE001 - a failed cell is recorded, the sweep goes on
            message = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            row.update(status="failed", error=message, seconds=f"{time.time() - started:.1f}")
            log(f"[cell {len(durations) + 1}/{len(pending)}] {spec}: FAILED ({message})")
        durations.append(time.time() - started)
        rows.append(row)
        write_results(path, rows + [previous[s] for s, _, _ in todo[len(rows):] if s in previous],
                      flag_fields)
    write_results(path, rows, flag_fields)
    return rows


def heatmap(rows, names, png_path, title=""):
    """The contingency heat-map (module docstring) of the finished cells."""
    scores = {r["spec"]: float(r["top1"]) for r in rows if r.get("status") == "done"}
    return figures.heatmap(scores, names, {}, {}, png_path,
                           title or "PIRL linear-probe top-1 (%)", "linear top-1 (%)")


def markdown_table(rows):
    lines = ["| cell | linear top-1 | kNN top-1 | status | seconds |", "|---|---|---|---|---|"]
    for r in rows:
        top1 = f"{100 * float(r['top1']):.2f}" if r.get("top1") else "-"
        knn = f"{100 * float(r['knn_top1']):.2f}" if r.get("knn_top1") else "-"
        lines.append(f"| {r['spec']} | {top1} | {knn} | {r['status']} | {r.get('seconds', '')} |")
    return "\n".join(lines)
