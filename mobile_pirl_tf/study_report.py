"""The study's report: intervals, verdicts, the stage-B heat-map, the Pareto plot, REPORT.md and
results.csv (`study.run_study` calls `write`).

Intervals are Student-t 95% intervals of the mean over seeds, mean +- t(0.975, n - 1) s / sqrt(n)
(s the sample standard deviation); a single run has no interval. A winner is named only when
its interval lies above the runner-up's; otherwise every finalist whose interval reaches the
best one's is listed as tied.
"""

import csv
import datetime
import math
import os
import sys

import numpy as np

METRICS = ("linear_top1", "knn_top1")


def summary(runs, metric):
    """{n, mean, half, low, high} of `metric` over runs (half = NaN when n < 2)."""
    from scipy import stats

    values = np.array([r[metric] for r in runs if r.get(metric) is not None], np.float64)
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": math.nan, "half": math.nan, "low": math.nan, "high": math.nan}
    mean = float(values.mean())
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)) if n > 1 \
        else math.nan
    low, high = (mean - half, mean + half) if n > 1 else (mean, mean)
    return {"n": n, "mean": mean, "half": half, "low": low, "high": high}


def verdict(results, metric="linear_top1"):
    """("winner", [label]) when the best mean's interval clears the runner-up's, else ("tied",
    [labels of every finalist whose interval overlaps the best's]); `results` is
    [(label, runs)]."""
    summaries = ((summary(runs, metric), label) for label, runs in results)
    scored = sorted((x for x in summaries if x[0]["n"]), key=lambda x: -x[0]["mean"])
    if not scored:
        return "none", []
    best = scored[0][0]
    if len(scored) == 1:
        return "only", [scored[0][1]]
    if best["n"] > 1 and scored[1][0]["n"] > 1 and best["low"] > scored[1][0]["high"]:
        return "winner", [scored[0][1]]
    return "tied", [label for s, label in scored
                    if s["n"] < 2 or best["n"] < 2 or s["high"] >= best["low"]]


def pct(summary_or_value, with_interval=True):
    if isinstance(summary_or_value, dict):
        s = summary_or_value
        if not s["n"]:
            return "-"
        if with_interval and s["n"] > 1:
            return f"{100 * s['mean']:.2f} +- {100 * s['half']:.2f}"
        return f"{100 * s['mean']:.2f}"
    return "-" if summary_or_value is None else f"{100 * summary_or_value:.2f}"


def pareto_front(points):
    """Indices of the points (cost, accuracy) no other point beats on both (lower cost, higher
    accuracy), sorted by cost."""
    front = [i for i, (c, a) in enumerate(points)
             if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in points)]
    return sorted(front, key=lambda i: points[i][0])


# --- figures -------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def heatmap(grid_scores, names, finalists, baselines, png_path, title,
            label="kNN top-1 (%): random init .. supervised"):
    """The contingency heat-map: rows the first transform, columns the second, the diagonal a
    transform alone; each cell its score {spec: top-1} in %. Finalists ({spec: mark}) are framed
    and their mark printed ('=' tied, '*' winner). The colour scale runs from the random-init
    baseline to the supervised one when `baselines` has them, else over the cells."""
    plt = _pyplot()
    n = len(names)
    grid = np.full((n, n), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            spec = a if i == j else f"{a}+{b}"
            if spec in grid_scores:
                grid[i, j] = 100 * grid_scores[spec]
    cells = grid[np.isfinite(grid)]
    low = 100 * baselines["random"] if "random" in baselines else \
        (cells.min() if cells.size else 0.0)
    high = 100 * baselines["supervised"] if "supervised" in baselines else \
        (cells.max() if cells.size else 100.0)
    fig, ax = plt.subplots(figsize=(1.1 * n + 2.5, 1.0 * n + 1.8))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="Greens", vmin=low, vmax=max(high, low + 1))
    for i in range(n):
        for j in range(n):
            if np.isnan(grid[i, j]):
                continue
            spec = names[i] if i == j else f"{names[i]}+{names[j]}"
            mark = finalists.get(spec, "")
            ax.text(j, i, f"{grid[i, j]:.1f}{mark}", ha="center", va="center", fontsize=9,
                    color="white" if grid[i, j] > (low + high) / 2 else "black")
            if spec in finalists:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=2,
                                           edgecolor="black"))
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("2nd transformation")
    ax.set_ylabel("1st transformation")
    ax.set_title(title, fontsize=9)
    bar = fig.colorbar(image, ax=ax, fraction=0.046)
    bar.set_label(label)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path


def pareto_plot(rows, png_path, title):
    """Linear top-1 (mean over seeds, with its interval) against int8 host latency and against
    multiply-adds; the Pareto front drawn, each point labelled backbone/transforms."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, key, label in ((axes[0], "int8_ms", "int8 LiteRT latency, host, 1 thread (ms)"),
                           (axes[1], "macs", "multiply-adds (M)")):
        points = [((r[key] / 1e6 if key == "macs" else r[key]), 100 * r["linear"]["mean"])
                  for r in rows]
        for (x, y), r in zip(points, rows):
            half = 100 * r["linear"]["half"] if r["linear"]["n"] > 1 else 0
            ax.errorbar(x, y, yerr=half, fmt="o", capsize=3)
            ax.annotate(r["label"], (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        front = pareto_front(points)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "r--", lw=1,
                label="Pareto front")
        ax.set_xlabel(label)
        ax.set_ylabel("linear top-1 (%)")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path


# --- the report ------------------------------------------------------------------------------

def _label(cell):
    return f"{cell.backbone}/{cell.transforms}"


def _finalists_table(results):
    lines = ["| cell | seeds | linear top-1 (%) | kNN top-1 (%) | wall time per run |",
             "|---|---|---|---|---|"]
    for r in results:
        secs = [run.get("seconds", 0) for run in r["runs"]]
        mean_s = f"{np.mean(secs) / 60:.1f} min" if secs else "-"
        lines.append(f"| {_label(r['cell'])} | {len(r['runs'])} | "
                     f"{pct(summary(r['runs'], 'linear_top1'))} | "
                     f"{pct(summary(r['runs'], 'knn_top1'))} | {mean_s} |")
    return lines


def _halving_table(stage):
    rung_list = stage["rungs"]
    lines = ["| cell | " + " | ".join(f"kNN @ {r} ep" for r in rung_list) + " | outcome |",
             "|---|" + "---|" * (len(rung_list) + 1)]
    last = rung_list[-1]
    for key in stage["cells"]:
        values = [stage["rung_scores"].get(r, {}).get(key) for r in rung_list]
        if key in stage["failed"]:
            outcome = f"failed: {stage['failed'][key][:80]}"
        elif values[-1] is not None:
            outcome = f"reached {last} epochs"
        else:
            reached = [r for r, v in zip(rung_list, values) if v is not None]
            outcome = f"cut at {reached[-1]} epochs" if reached else "not run"
        lines.append(f"| {key.rsplit('/', 1)[0]} | " + " | ".join(pct(v) for v in values)
                     + f" | {outcome} |")
    return lines


def _verdict_text(results):
    kind, labels = verdict([(_label(r["cell"]), r["runs"]) for r in results])
    if kind == "winner":
        return f"Winner: **{labels[0]}** (its 95% interval clears the runner-up's)."
    if kind == "only":
        return f"Only finalist: **{labels[0]}** (no runner-up to separate it from)."
    if kind == "tied":
        return ("Tied (95% intervals overlap, or too few seeds to separate): "
                + ", ".join(f"**{x}**" for x in labels) + ".")
    return "No finalist was scored."


def _heatmap_section(output_dir, state, log):
    flags, b = state["flags"], state["stages"]["B"]
    first = b["rungs"][0]
    grid = {k.split("/")[1]: v for k, v in b["rung_scores"].get(first, {}).items()}
    results = b["finalists"] + state["stages"].get("B3", {}).get("finalists", [])
    kind, tied = verdict([(r["cell"].transforms, r["runs"]) for r in results])
    marks = {r["cell"].transforms: "" for r in results}
    marks.update({t: ("*" if kind in ("winner", "only") else "=") for t in tied})
    png = heatmap(grid, list(flags["transforms"]), marks, state.get("baselines", {}),
                  os.path.join(output_dir, "heatmap.png"),
                  f"PIRL {state.get('study_backbone')} {state['base']['image_size']}px: kNN "
                  f"top-1 after {first} epoch(s); framed: finalists (= tied, * winner)")
    log(f"wrote {png}")
    anchors = ", ".join(f"{k} {100 * v:.2f}" for k, v in state.get("baselines", {}).items())
    return ["![stage B heat-map](heatmap.png)", "",
            f"Each cell: kNN top-1 (%) after the first rung ({first} epochs, seed 0), the one "
            "score every cell has; framed cells are the finalists, '=' marks those tied with "
            "the best (95% intervals overlap), '*' the winner. Colour scale anchored on the "
            "baselines (kNN top-1 %, same backbone and probe data): "
            f"{anchors or 'not measured'}.", ""]


STAGE_TITLES = {
    "A": "Stage A: backbones with the jigsaw pretext",
    "B": "Stage B: transformation combinations (singles and pairs)",
    "B3": "Stage B (triples): the best pairs extended",
    "C": "Stage C: backbones with the best combinations",
}


def write(output_dir, state, runner, log=print):
    """Writes REPORT.md, results.csv and the figures of what the study has finished."""
    flags = state["flags"]
    lines = ["# Mobile-PIRL study: experiments A-D", "",
             f"Command: `python -m mobile_pirl_tf.study {' '.join(sys.argv[1:])}`", "",
             f"Machine: {state['machine']}. Date: {datetime.date.today().isoformat()}. "
             f"Budget: {flags['budget_hours'] or 'none'} h; this invocation took "
             f"{state.get('wall_seconds', 0) / 3600:.2f} h.", "",
             f"Data: {state['base']['data_dir'] or state['base']['dataset']} (pretraining, "
             f"{state['steps_per_epoch']} steps of {state['base']['batch_size']} images per "
             f"epoch), {flags['eval_data_dir']} (probes: {state['splits']['train']} train / "
             f"{state['splits']['test']} test images). {state['base']['image_size']} px. "
             f"Recipe: {state['base']['recipe']} (train.py's defaults otherwise).", "",
             f"Successive halving: rungs {state['stages'].get('A', {}).get('rungs', '-')} "
             f"epochs, keeping the best 1/{flags['eta']} (kNN top-1) at each; the "
             f"{flags['finalists']} best at the last rung are re-run under {flags['seeds']} "
             "seeds and scored with the linear probe and kNN. Intervals: 95% Student-t over "
             "seeds.", ""]
    if state.get("stopped"):
        lines += [f"**Partial report**: the study stopped at its budget: {state['stopped']}. "
                  "Rerun the same command (with more --budget_hours) to continue.", ""]
    plan, dearest = state.get("plan_seconds", {}), state.get("plan_seconds_dearest", {})
    for name in ("A", "B", "B3", "C"):
        stage = state["stages"].get(name)
        if not stage:
            continue
        lines += [f"## {STAGE_TITLES[name]}", ""]
        if name != "B3":
            triples = " (triples included)" if name == "B" else ""
            took = sum(state["stages"].get(n, {}).get("seconds", 0)
                       for n in ((name, "B3") if name == "B" else (name,)))
            lines += [f"Cells: {len(stage['cells'])}; planned time of the stage "
                      f"{plan.get(name, 0) / 60:.0f} min (up to "
                      f"{dearest.get(name, plan.get(name, 0)) / 60:.0f} min if the dearest "
                      f"cells go on){triples}; this invocation ran it in {took / 60:.0f} min.",
                      ""]
        if name == "B":
            chosen = "--study_backbone" if flags["study_backbone"] else "stage A winner"
            lines += [f"Backbone: {state.get('study_backbone')} ({chosen}).", ""]
        lines += ["Successive halving (kNN top-1, %):", ""] + _halving_table(stage) + [""]
        if stage["finalists"]:
            lines += ["Finalists (mean +- 95% interval over seeds):", ""]
            lines += _finalists_table(stage["finalists"]) + ["", _verdict_text(
                stage["finalists"]), ""]
        if name == "B":
            lines += _heatmap_section(output_dir, state, log)
    if state.get("top_transforms"):
        lines += [f"Chosen for stage C: {', '.join(state['top_transforms'])} (best mean linear "
                  "top-1 among stage B's finalists, triples included).", ""]
    d = state["stages"].get("D")
    if d and d["rows"]:
        table = []
        for row in d["rows"]:
            table.append({**row, "label": _label(row["cell"]),
                          "linear": summary(row["runs"], "linear_top1")})
        lines += ["## Stage D: accuracy against cost", "",
                  "| cell | linear top-1 (%) | params (M) | MACs (M) | float32 MB | int8 MB | "
                  "float32 ms | int8 ms | phone int8 ms |", "|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(table, key=lambda r: -r["linear"]["mean"]):
            lines.append(f"| {r['label']} | {pct(r['linear'])} | {r['params'] / 1e6:.2f} | "
                         f"{r['macs'] / 1e6:.0f} | {r['float32_bytes'] / 1e6:.2f} | "
                         f"{r['int8_bytes'] / 1e6:.2f} | {r['float32_ms']:.2f} | "
                         f"{r['int8_ms']:.2f} | {r.get('phone_int8_ms', '-')} |")
        front = pareto_front([(r["int8_ms"], r["linear"]["mean"]) for r in table])
        lines += ["", "Latency: LiteRT on this host, 1 thread, median of 50 invokes (int8: "
                  "post-training quantization of the same graph; quantization-aware training "
                  "changes the weights, not the ops timed). On the Pareto front (int8 latency): "
                  + ", ".join(table[i]["label"] for i in front) + ".", "",
                  "![Pareto](pareto.png)", ""]
        pareto_plot(table, os.path.join(output_dir, "pareto.png"),
                    f"PIRL at {state['base']['image_size']} px: accuracy against cost")
    with open(os.path.join(output_dir, "REPORT.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    write_csv(os.path.join(output_dir, "results.csv"), state, runner)
    log(f"wrote {os.path.join(output_dir, 'REPORT.md')} and results.csv")


CSV_FIELDS = ["stage", "backbone", "transforms", "seed", "epochs", "role", "seconds",
              "knn_top1", "linear_top1", "linear_top5", "final_loss", "params", "macs",
              "float32_bytes", "int8_bytes", "float32_ms", "int8_ms"]


def write_csv(path, state, runner):
    """One row per scored run (cell, epochs) of every stage, with the base training flags."""
    from mobile_pirl_tf.study import Cell

    costs = {}
    for row in state["stages"].get("D", {}).get("rows", []):
        costs[row["cell"].backbone] = row
    base = {k: v for k, v in state["base"].items() if k not in ("backbone", "transforms", "seed",
                                                                "epochs", "model_dir")}
    rows = []
    for name, stage in state["stages"].items():
        if name == "D":
            continue
        finalist_keys = {r["cell"].key for r in stage["finalists"]}
        cells = [Cell(*key.rsplit("/", 2)[:2]) for key in stage["cells"]]
        for cell in cells:
            for seed in range(max(1, state["flags"]["seeds"])):
                seeded = cell.with_seed(seed)
                if seed and cell.key not in finalist_keys:
                    continue
                for epochs, scores in sorted(runner.scores(seeded).items()):
                    if epochs not in stage["rungs"]:
                        continue
                    role = "finalist" if cell.key in finalist_keys and \
                        epochs == stage["rungs"][-1] else "halving"
                    rows.append({"stage": name, "backbone": cell.backbone,
                                 "transforms": cell.transforms, "seed": seed, "epochs": epochs,
                                 "role": role, **{k: scores.get(k) for k in CSV_FIELDS[6:11]},
                                 **{k: costs.get(cell.backbone, {}).get(k)
                                    for k in CSV_FIELDS[11:]}, **base})
    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS + sorted(base), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)
