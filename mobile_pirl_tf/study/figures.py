"""The study's figures: the stage-B heat-map and the stage-D Pareto plot (matplotlib, Agg)."""

import numpy as np


def pareto_front(points):
    """Indices of the points (cost, accuracy) no other point beats on both (lower cost, higher
    accuracy), sorted by cost."""
    front = [i for i, (c, a) in enumerate(points)
             if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in points)]
    return sorted(front, key=lambda i: points[i][0])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def heatmap(grid_scores, names, marked, baselines, png_path, title,
            label="linear top-1 (%)"):
    """The contingency heat-map: rows the first transform, columns the second, the diagonal a
    transform alone; each cell its score {spec: top-1} in %. Cells in `marked` ({spec: mark})
    are framed and their mark printed after the score. The colour scale runs from the
    random-init baseline to the supervised one when `baselines` has them, else over the
    cells."""
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
            mark = marked.get(spec, "")
            ax.text(j, i, f"{grid[i, j]:.1f}{mark}", ha="center", va="center", fontsize=9,
                    color="white" if grid[i, j] > (low + high) / 2 else "black")
            if spec in marked:
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
    """Linear top-1 against int8 host latency and against multiply-adds: each point the mean
    over seeds with its 95% interval drawn (rows: {label, mean, low, high, int8_ms, macs}); the
    front of the means drawn, each point labelled."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, key, label in ((axes[0], "int8_ms", "int8 LiteRT latency, host, 1 thread (ms)"),
                           (axes[1], "macs", "multiply-adds (M)")):
        points = [((r[key] / 1e6 if key == "macs" else r[key]), 100 * r["mean"]) for r in rows]
        for (x, y), r in zip(points, rows):
            if np.isfinite(r["low"]):
                ax.errorbar(x, y, yerr=[[y - 100 * r["low"]], [100 * r["high"] - y]], fmt="o",
                            capsize=3)
            else:
                ax.plot(x, y, "s")  # one run: no interval
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
