"""The study's report: REPORT.md (a results section: what was compared, each stage's arms and
verdicts with their intervals, what the run can and cannot say, what it would cost at scale)
and results.csv (every recorded run), with the heat-map and the Pareto plot, all written from
the runs' records and the `Study`'s decisions."""

import collections
import csv
import dataclasses
import math
import os

from mobile_pirl_tf.core.progress import duration
from mobile_pirl_tf.core.records import atomic_write, write_text
from mobile_pirl_tf.study import figures, plan, scale, stats
from mobile_pirl_tf.study.cells import Cell, Run
from mobile_pirl_tf.study.stages import screen_cells


def pct(value, digits=2):
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}"


def interval(s):
    return "-" if s.n < 2 else f"[{pct(s.low)}, {pct(s.high)}]"


class Report:
    """Builds REPORT.md and results.csv for a `stages.Study` (after or during `run`)."""

    def __init__(self, study, base, command, wall_seconds, plans, num_examples):
        self.s, self.c, self.base = study, study.c, base
        self.command, self.wall, self.plans = command, wall_seconds, plans
        self.num_examples = num_examples
        self.out = self.c.output_dir

    # --- pieces ----------------------------------------------------------------------------

    def records(self):
        """[(Run, record)] of every run recorded in output_dir/records."""
        return self.s.runner.recorded()

    def baseline(self, backbone):
        record = self.s.runner.record_baseline(backbone)
        return None if record is None else record["linear_top1"]

    def arm_table(self, cells):
        lines = ["| arm | seeds | linear top-1 (%) | 95% interval | sd | random init | gain | "
                 "kNN top-1 (%) |", "|---|---|---|---|---|---|---|---|"]
        for cell in cells:
            scores = self.s.arm_scores(cell)
            s = stats.summarize(scores.values())
            knn = stats.summarize(self.s.arm_scores(cell, "knn_top1").values())
            random = self.baseline(cell.backbone)
            gain = s.mean - random if random is not None and s.n else None
            lines.append(f"| {cell.label} | {','.join(map(str, sorted(scores))) or '-'} | "
                         f"{pct(s.mean)} | {interval(s)} | {pct(s.sd)} | {pct(random)} | "
                         f"{'-' if gain is None else f'{100 * gain:+.2f}'} | {pct(knn.mean)} |")
        return lines

    def comparison_table(self, comparisons):
        if not comparisons:
            return ["No planned comparison has two arms with scores yet."]
        lines = ["| comparison | pairs | difference (points) [95% interval] | p | p Holm | "
                 f"TOST p Holm (+-{self.c.equivalence_margin:g}) | detectable | verdict |",
                 "|---|---|---|---|---|---|---|---|"]
        for x in comparisons:
            lines.append(f"| {x.a} - {x.b} | {x.n} | {pct(x.difference)} [{pct(x.low)}, "
                         f"{pct(x.high)}] | {x.p:.3g} | {x.p_holm:.3g} | "
                         f"{x.p_equivalent_holm:.3g} | {pct(x.detectable)} | {x.verdict()} |")
        return lines

    def screen_section(self):
        b = self.s.state.study_backbone
        epochs = self.c.epochs
        scores = {t: self.s.screen_score(t) for t in self.s.state.screen}
        knn = {t: (self.s.runner.record(Run(Cell(b, t), 0, epochs)) or {}).get("knn_top1")
               for t in self.s.state.screen}
        sd = stats.pooled_sd(self.s.comparisons("B"))
        df = sum(x.n - 1 for x in self.s.comparisons("B") if x.n >= 2)
        lsd = stats.least_significant_difference(sd, df, self.c.alpha)
        marks = {t: "+" for t in self.s.state.confirmed_b}
        if self.s.state.top_transforms:
            marks[self.s.state.top_transforms[0]] = "*"
        if df:  # the confirmation has paired seeds: the LSD is measured
            title_lsd = f"LSD {pct(lsd, 1)} points"
            noise = (f"the least significant difference LSD = t(0.975, {df}) x sd of a paired "
                     f"difference = **{pct(lsd, 2)} points** (sd measured on the confirmed "
                     "arms' pairs).")
        else:
            title_lsd = "LSD after the confirmation"
            noise = ("the least significant difference, which needs the confirmed arms' "
                     "paired seeds (not run yet).")
        random = self.baseline(b)
        png = figures.heatmap(
            {t: v for t, v in scores.items() if v is not None}, list(self.c.transforms), marks,
            {"random": random} if random is not None else {},
            os.path.join(self.out, "heatmap.png"),
            f"PIRL {b}, {self.base.image_size} px, {epochs} epochs, seed 0: linear top-1 (%); "
            f"framed: confirmed (* best); {title_lsd}")
        lines = [f"![stage B screen]({os.path.basename(png)})", "",
                 f"The screen: every cell trained once (seed 0) for {epochs} epochs and scored "
                 "by the linear probe (colour from random init up). Seed 0 only selects: it "
                 "scores none of the confirmed arms below. Two screen cells differ beyond "
                 f"their one-seed noise when their gap exceeds {noise}", "",
                 "| cell | linear top-1 (%) | kNN top-1 (%) | confirmed |", "|---|---|---|---|"]
        for t in sorted(scores, key=lambda t: -(scores[t] or -1)):
            lines.append(f"| {t} | {pct(scores[t])} | {pct(knn[t])} | "
                         f"{'yes' if t in self.s.state.confirmed_b else ''} |")
        return lines + [""]

    def length_section(self):
        lines = ["## How long each run trains", ""]
        gains = []
        for stage in ("A", "B", "C"):
            for cell in self.s.arms(stage):
                s = stats.summarize(self.s.arm_scores(cell).values())
                random = self.baseline(cell.backbone)
                if s.n and random is not None:
                    gains.append((s.mean - random, cell.label))
        if gains:
            low, label = min(gains)
            lines.append(f"Every run trains {self.c.epochs} epochs of "
                         f"{self.s.costs.steps_per_epoch} steps on its own cosine schedule. "
                         f"Gain of the confirmed arms over their own random init: "
                         f"{100 * low:+.1f} ({label}) to {100 * max(gains)[0]:+.1f} points.")
        b = self.s.state.study_backbone
        for extra, seed, cells, what in (
                (self.c.pilot_epochs, 0, self.s.state.screen[:self.c.pilot_cells],
                 "the first screen cells, seed 0"),
                (self.c.long_epochs, 1, self.s.state.confirmed_b,
                 "stage B's confirmed arms, seed 1")):
            if not extra or not b:
                continue
            pairs = []
            for t in cells:
                short, long_ = (self.s.runner.record(Run(Cell(b, t), seed, e))
                                for e in sorted((extra, self.c.epochs)))
                if short and long_:
                    pairs.append((t, short["linear_top1"], long_["linear_top1"]))
            lo, hi = sorted((extra, self.c.epochs))
            if not pairs:
                lines.append(f"\nRank check at {extra} epochs ({what}): not run yet.")
                continue
            tau = stats.kendall_tau([p[1] for p in pairs], [p[2] for p in pairs])
            tau_text = (f"Kendall tau = {tau:.2f} over {len(pairs)} cells" if tau == tau else
                        f"Kendall tau needs 3 cells, {len(pairs)} scored so far")
            lines += ["", f"Rank check, {what}: linear top-1 at {lo} and at {hi} epochs; "
                      f"{tau_text}.", "",
                      f"| cell | {lo} epochs | {hi} epochs |", "|---|---|---|"]
            lines += [f"| {t} | {pct(x)} | {pct(y)} |" for t, x, y in pairs]
        return lines + [""]

    def stage_d(self):
        rows = []
        for stage in ("A", "B", "C"):  # every confirmed backbone x transformation pair
            for cell in self.s.arms(stage):
                s = stats.summarize(self.s.arm_scores(cell).values())
                fp = self.s.state.footprints.get(cell.backbone)
                if s.n and fp and cell.label not in [r["label"] for r in rows]:
                    rows.append({"label": cell.label, "mean": s.mean, "low": s.low,
                                 "high": s.high, **fp})
        ref = self.c.reference_backbone and self.s.runner.record(self.s.reference_run())
        fp = self.s.state.footprints.get(self.c.reference_backbone)
        if ref and fp:
            run = self.s.reference_run()
            rows.append({"label": f"{run.cell.label} (reference, 1 run, {run.epochs} epoch"
                                  f"{'s' if run.epochs > 1 else ''})",
                         "mean": ref["linear_top1"], "low": math.nan, "high": math.nan, **fp})
        if not rows:
            return []
        lines = ["## Stage D: accuracy against cost", "",
                 "| arm | linear top-1 (%) [95% interval] | params (M) | MACs (M) | float32 MB | "
                 "int8 MB | float32 ms | int8 ms | phone int8 ms |", "|---|---|---|---|---|---|"
                 "---|---|---|"]
        for r in sorted(rows, key=lambda r: -r["mean"]):
            ci = "" if not math.isfinite(r["low"]) else f" [{pct(r['low'])}, {pct(r['high'])}]"
            lines.append(f"| {r['label']} | {pct(r['mean'])}{ci} | {r['params'] / 1e6:.2f} | "
                         f"{r['macs'] / 1e6:.0f} | {r['float32_bytes'] / 1e6:.2f} | "
                         f"{r['int8_bytes'] / 1e6:.2f} | {r['float32_ms']:.2f} | "
                         f"{r['int8_ms']:.2f} | {r.get('phone_int8_ms', '-')} |")
        front = figures.pareto_front([(r["int8_ms"], r["mean"]) for r in rows])
        figures.pareto_plot(rows, os.path.join(self.out, "pareto.png"),
                            f"PIRL at {self.base.image_size} px: accuracy (95% interval) "
                            "against cost")
        return lines + ["", "Latency: LiteRT on the host of the stage-D run, 1 thread, median "
                        "of 50 invokes (int8: post-training quantization of the same graph). "
                        "On the front of the means by int8 latency: "
                        + ", ".join(rows[i]["label"] for i in front)
                        + " (a point's interval decides whether it is really off the front).",
                        "", "![Pareto](pareto.png)", ""]

    # --- the document ---------------------------------------------------------------------

    def answers(self):
        lines = ["## Answers", ""]
        titles = {"A": "A (backbones, jigsaw)", "B": "B (transformations, "
                  f"{self.s.state.study_backbone})", "C": "C (backbones with B's best)"}
        for stage, title in titles.items():
            comparisons = self.s.comparisons(stage)
            if not comparisons:
                continue
            text = "; ".join(x.verdict() for x in comparisons)
            lines.append(f"- **{title}**: {text}.")
        return lines + [""]

    def machines(self, records):
        count = collections.Counter(r.get("machine", "?") for _, r in records)
        dates = sorted(r.get("date", "?") for _, r in records)
        where = "; ".join(f"{m} ({n} runs)" for m, n in count.most_common())
        return where or "-", (f"{dates[0]} to {dates[-1]}" if dates else "-")

    def text(self):
        c, st, records = self.c, self.s.state, self.records()
        where, when = self.machines(records)
        lines = [
            "# Mobile-PIRL study: experiments A-D", "",
            f"PIRL pretraining of {len(c.backbones)} mobile backbones with the jigsaw pretext "
            f"(A), of {st.study_backbone or 'the study backbone'} with "
            f"{len(st.screen or screen_cells(list(c.transforms)))} "
            "transformation combinations (B), and of the other backbones with B's best (C), "
            "each arm trained under the same paired seeds and scored by the linear probe; "
            "(D) accuracy against parameters, multiply-adds, size and latency.", "",
            f"Command: `{self.command}`", "",
            f"Runs: {len(records)} recorded, on {where}; {when}. This invocation: "
            f"{self.wall / 3600:.2f} h"
            + (f" of a budget of {c.budget_hours:g} h." if c.budget_hours else " (no budget).")
            + " Compute of every recorded run: "
            f"{sum(r.get('seconds', 0) for _, r in records) / 3600:.2f} h.", "",
            f"Protocol: {self.base.data_dir or self.base.dataset} without labels at "
            f"{self.base.image_size} px, batch {self.base.batch_size}, recipe "
            f"{self.base.recipe}; every scored run {c.epochs} epochs on its own schedule; "
            f"linear probe (ranking) and kNN on {c.eval_data_dir} "
            f"({self.s.runner.train_split.labels.size} train / "
            f"{self.s.runner.test_split.labels.size} test images); 95% t-intervals; "
            f"comparisons paired over common seeds, Holm-corrected per stage at alpha "
            f"{c.alpha}; equivalence by TOST within +-{c.equivalence_margin:g} points.", ""]
        if st.stopped:
            lines += [f"**Partial report**: the invocation stopped at its budget ({st.stopped}). "
                      "Rerun the same command to continue.", ""]
        lines += self.answers() + self.length_section()
        sections = {"A": "Stage A: backbones with the jigsaw pretext",
                    "B": "Stage B: transformation combinations",
                    "C": "Stage C: the backbones with stage B's best combination"}
        for stage, title in sections.items():
            arms = self.s.arms(stage)
            if not arms and not (stage == "B" and st.screen):
                continue
            lines += [f"## {title}", ""]
            if stage == "B":
                lines += self.screen_section()
            lines += (["Confirmed arms (seeds 1..N):", ""] + self.arm_table(arms) if arms
                      else ["Confirmed arms: none chosen yet."]) + [""]
            lines += self.comparison_table(self.s.comparisons(stage)) + [""]
            if stage == "A" and c.reference_backbone:
                ref = self.s.runner.record(self.s.reference_run())
                random = self.baseline(c.reference_backbone)
                lines += [f"Reference: {self.s.reference_run().key}: "
                          + (f"linear top-1 {pct(ref['linear_top1'])} (random init "
                             f"{pct(random)}), one run of {ref['seconds'] / 60:.0f} min, not "
                             "an arm of the comparisons." if ref else "not run yet."), ""]
        lines += self.stage_d() + self.limits(records) + self.time_section(records)
        return "\n".join(lines) + "\n"

    def limits(self, records):
        sd = plan.measured_pair_sd(self.s)
        mdd = (100 * stats.detectable_difference(sd / 100, self.c.seeds, self.c.alpha)
               if sd else math.nan)
        counts = collections.Counter(run.cell.backbone for run, _ in records)
        return ["## What this run can and cannot say", "",
                f"- Differences: with {self.c.seeds} paired seeds and the measured sd of a "
                f"paired difference ({'-' if sd is None else f'{sd:.2f}'} points), a comparison "
                f"detects about {mdd:.1f} points with 80% power; smaller true differences end "
                "inconclusive or, within the margin, equivalent.",
                f"- Scale: {self.c.epochs} epochs of {self.s.costs.steps_per_epoch} steps at "
                f"{self.base.image_size} px on one data set; the paper trains 200-800 epochs on "
                "ImageNet at 224 px. The rank checks above measure how far the order at this "
                "length carries to a longer one; it is not evidence for ImageNet-length "
                "training.",
                "- Selection: the best arm of A and B is chosen on the same seeds it is then "
                "compared on (comparisons with the best); seeds added to inconclusive "
                "comparisons are looks at the data: both make the intervals slightly "
                "optimistic. Seed 0 (the screen) scores no confirmed arm.", "",
                "The same runs on one 8-GPU machine (estimates from published throughput, "
                "`mobile_pirl_tf/study/scale.py`; not measured):", ""] + scale.lines(
                    dict(counts), self.num_examples, self.c.epochs) + [""]

    def time_section(self, records):
        """This invocation's plan against what it took, then every recorded run's compute by
        date and machine (what earlier invocations spent, whichever wrote the report)."""
        names = {"A": "A", "B": "B", "C": "C", "R": "reference", "D": "D and baselines",
                 "+": "extra seeds", "L": "long check"}
        lines = ["## Time", "", "| stage | planned at the start | this invocation |",
                 "|---|---|---|"]
        for key, name in names.items():
            p = self.plans.get(key)
            took = self.s.state.seconds.get(key)
            lines.append(f"| {name} | {duration(p.expected) if p else '-'} | "
                         f"{duration(took) if took is not None else '-'} |")
        spent = collections.defaultdict(lambda: [0, 0.0])
        for _, r in records:
            row = spent[r.get("date", "?"), r.get("machine", "?")]
            row[0] += 1
            row[1] += r.get("seconds", 0)
        lines += ["", "Every recorded run's compute, by date and machine:", "",
                  "| date | machine | runs | hours |", "|---|---|---|---|"]
        lines += [f"| {d} | {m} | {n} | {sec / 3600:.2f} |"
                  for (d, m), (n, sec) in sorted(spent.items())]
        return lines + [""]

    def write(self, log=print):
        write_text(os.path.join(self.out, "REPORT.md"), self.text())
        self.write_csv()
        log(f"wrote {os.path.join(self.out, 'REPORT.md')} and results.csv")

    def write_csv(self):
        fields = ["backbone", "transforms", "seed", "epochs", "role", "linear_top1",
                  "linear_top5", "knn_top1", "final_loss", "train_seconds", "probe_seconds",
                  "seconds", "machine", "date"]
        base = {k: v for k, v in dataclasses.asdict(self.base).items()
                if k not in ("backbone", "transforms", "seed", "epochs", "model_dir")}
        rows = []
        for run, record in self.records():
            role = ("screen" if run.seed == 0 and run.epochs == self.c.epochs else
                    "pilot" if run.seed == 0 else
                    "reference" if run.cell.backbone == self.c.reference_backbone else
                    "long" if run.epochs == self.c.long_epochs else "confirm")
            rows.append({**base, "backbone": run.cell.backbone,
                         "transforms": run.cell.transforms, "seed": run.seed,
                         "epochs": run.epochs, "role": role,
                         **{k: record.get(k) for k in fields[5:]}})
        with atomic_write(os.path.join(self.out, "results.csv"), newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields + sorted(base), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
