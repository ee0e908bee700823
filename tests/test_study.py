"""The study: its statistics against SciPy and hand-computed references, the stages, the
selection rules, the seed allocation, the plan and the report on injected scores (no
training), and one real run end to end."""

import math
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from scipy import stats as scipy_stats

from mobile_pirl_tf.core.records import write_json
from mobile_pirl_tf.study import plan, stats
from mobile_pirl_tf.study.cells import Cell, CellBusy, CellRunner, Run, machine
from mobile_pirl_tf.study.config import StudyConfig
from mobile_pirl_tf.study.costs import Budget, Costs
from mobile_pirl_tf.study.footprint import footprint_path, phone_latency
from mobile_pirl_tf.study.report import Report
from mobile_pirl_tf.study.stages import Study, screen_cells, screen_triples
from mobile_pirl_tf.study.trials import TrialLog

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- statistics ------------------------------------------------------------------------------

def test_paired_comparison_matches_scipy():
    rng = np.random.default_rng(0)
    a = {s: 0.45 + 0.01 * rng.normal() for s in range(1, 7)}
    b = {s: a[s] - 0.012 + 0.006 * rng.normal() for s in range(1, 6)}  # one seed fewer
    c = stats.compare("a", a, "b", b, margin=0.02)
    seeds = sorted(set(a) & set(b))
    x, y = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
    assert c.seeds == seeds and c.n == 5
    assert c.difference == pytest.approx(np.mean(x - y))
    assert c.p == pytest.approx(scipy_stats.ttest_rel(x, y).pvalue)
    ci = scipy_stats.ttest_rel(x, y).confidence_interval(0.95)
    assert (c.low, c.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    # TOST: the larger of the two one-sided tests against -M and +M.
    d = x - y
    p_low = scipy_stats.ttest_1samp(d, -0.02, alternative="greater").pvalue
    p_high = scipy_stats.ttest_1samp(d, 0.02, alternative="less").pvalue
    assert c.p_equivalent == pytest.approx(max(p_low, p_high))


def test_holm_matches_a_hand_computed_example():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> max(0.06, 0.04)
    assert stats.holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06,
                                                                          0.02])
    assert stats.holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 2 x 0.5 caps at 1


def test_verdicts_name_a_winner_an_equivalence_or_say_inconclusive():
    seeds = range(1, 7)
    base = {s: 0.40 + 0.01 * (s % 3) for s in seeds}
    wins = stats.holm([stats.compare("x", {s: base[s] + 0.03 + 0.002 * (s % 2) for s in seeds},
                                     "y", base, 0.02)])[0]
    assert wins.kind == "winner" and wins.verdict().startswith("x beats y by 3.")
    same = stats.holm([stats.compare("x", {s: base[s] + 0.001 * (-1) ** s for s in seeds},
                                     "y", base, 0.02)])[0]
    assert same.kind == "equivalent" and "equivalent within +-2" in same.verdict()
    noisy = stats.holm([stats.compare("x", {s: base[s] + 0.04 * (-1) ** s for s in seeds},
                                      "y", base, 0.02)])[0]
    assert noisy.kind == "inconclusive" and noisy.verdict().startswith("inconclusive: x - y = ")
    one = stats.holm([stats.compare("x", {1: 0.5}, "y", {1: 0.4}, 0.02)])[0]
    assert one.kind == "inconclusive" and "no interval" in one.verdict()
    for c in (wins, same, noisy, one):
        assert "tied" not in c.verdict()


def test_holm_turns_a_lone_winner_into_an_inconclusive_member_of_a_family():
    seeds = range(1, 5)
    base = {s: 0.4 + 0.01 * s for s in seeds}
    lone = stats.compare("x", {s: base[s] + 0.012 + 0.004 * (-1) ** s for s in seeds}, "y",
                         base, 0.02)
    assert 0.01 < lone.p < 0.05
    others = [stats.compare(f"z{i}", {s: base[s] + 0.03 * (-1) ** (s + i) for s in seeds}, "y",
                            base, 0.02) for i in range(3)]
    family = stats.holm([lone] + others)
    assert family[0].p_holm > lone.p and family[0].p_holm == pytest.approx(min(1, 4 * lone.p))


def test_detectable_difference_has_the_stated_power():
    sd, n, alpha = 0.012, 5, 0.05
    mdd = stats.detectable_difference(sd, n, alpha)
    df, critical = n - 1, scipy_stats.t.ppf(1 - alpha / 2, n - 1)
    power = scipy_stats.nct.sf(critical, df, mdd / (sd / math.sqrt(n)))
    assert 0.75 < power < 0.85
    assert math.isnan(stats.detectable_difference(sd, 1))


def test_arm_summary_and_kendall_tau():
    s = stats.summarize([0.40, 0.43, 0.46])
    half = scipy_stats.t.ppf(0.975, 2) * np.std([0.40, 0.43, 0.46], ddof=1) / math.sqrt(3)
    assert (s.n, s.mean, s.half) == (3, pytest.approx(0.43), pytest.approx(half))
    assert stats.summarize([0.5]).n == 1 and math.isnan(stats.summarize([0.5]).sd)
    assert stats.kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(2 / 3)
    assert math.isnan(stats.kendall_tau([1, 2], [2, 1]))


def test_screen_cells_and_triples():
    assert screen_cells(["a", "b", "c"]) == ["a", "b", "c", "a+b", "a+c", "b+c"]
    names = ["jigsaw", "rotation", "crop", "color"]
    singles = {"jigsaw": 0.4, "rotation": 0.3, "crop": 0.5, "color": 0.1}
    pairs = {"jigsaw+crop": 0.6, "rotation+color": 0.2, "crop+color": 0.55, "jigsaw+rotation": 0}
    assert screen_triples(singles, pairs, names) == [
        "jigsaw+rotation+crop", "jigsaw+crop+color", "rotation+crop+color"]


# --- the stages on injected scores -----------------------------------------------------------

class FakeRunner(CellRunner):
    """The real runner's records, with scores injected instead of training: a cell's mean
    (`means`, default 0.30) plus a seed effect shared by every cell (the pairing) and a small
    per-run noise."""

    def __init__(self, output_dir, means, noise=0.004, busy=()):
        from mobile_pirl_tf.data.labelled import LabelledSplit

        split = LabelledSplit("fake", ["x"] * 10, np.arange(10) % 2, ["a", "b"])
        super().__init__(study_base(), str(output_dir), str(output_dir / "runs"), (split, split),
                         log=lambda *_: None)
        self.means, self.noise, self.busy = means, noise, set(busy)
        self.trained = []

    def score(self, run):
        if run.key in self.busy:
            self.busy.discard(run.key)
            raise CellBusy(f"{run.key} is in use")
        self.trained.append(run)
        rng = np.random.default_rng(zlib.crc32(run.key.encode()))
        seed_effect = 0.01 * math.sin(run.seed * 1.7)
        mean = self.means.get(run.cell.label, self.means.get(run.cell.transforms, 0.30))
        value = mean * (run.epochs / 4) ** 0.2 + seed_effect + self.noise * rng.normal()
        return {"linear_top1": value, "knn_top1": value - 0.02, "linear_top5": None,
                "final_loss": 8.0}

    def score_baseline(self, backbone, seed=0):
        return {"linear_top1": 0.15, "knn_top1": 0.14}


class FakeCosts:
    steps_per_epoch = 10

    def run_seconds(self, cell, epochs):
        return 60.0 * epochs * (2 if cell.kind == "patches" else 1)

    def probe_seconds(self, backbone):
        return 10.0

    def measured(self, backbone):
        return True

    def observe(self, cell, record):  # injected costs stay as they are
        pass


def study_config(tmp_path, **overrides):
    fields = dict(backbones=("mobilenetv3small", "mobilenetv2", "mnasnet_a1"),
                  transforms=("jigsaw", "crop", "color", "rotation"), reference_backbone="",
                  epochs=4, pilot_epochs=2, pilot_cells=4, seeds=3, max_seeds=5, confirm=2,
                  triples=1, eval_data_dir="unused", output_dir=str(tmp_path))
    return StudyConfig(**{**fields, **overrides}).validate()


MEANS = {"mobilenetv3small/jigsaw": 0.36, "mobilenetv2/jigsaw": 0.30,
         "mnasnet_a1/jigsaw": 0.299, "crop+color": 0.45, "crop": 0.40, "color": 0.37,
         "jigsaw+crop": 0.43, "crop+color+jigsaw": 0.30}


def injected_study(tmp_path, means=MEANS, hours=0, **overrides):
    runner = FakeRunner(tmp_path, means)
    study = Study(study_config(tmp_path, **overrides), runner, FakeCosts(), Budget(hours),
                  footprint=lambda b: {"params": 1e6, "macs": 5e6, "float32_bytes": 4e6,
                                       "int8_bytes": 1e6, "float32_ms": 1.0, "int8_ms": 0.8},
                  log=lambda *_: None)
    return study, runner


def test_stages_select_confirm_and_compare_on_paired_seeds(tmp_path):
    study, runner = injected_study(tmp_path)
    state = study.run()
    assert state.stopped is None
    assert state.study_backbone == "mobilenetv3small"  # A's best mean
    assert state.screen[:10] == screen_cells(["jigsaw", "crop", "color", "rotation"])
    assert len(state.screen) > 10  # triples screened after the pairs
    assert state.confirmed_b[:2] == ["crop+color", "jigsaw+crop"]
    assert "jigsaw" in state.confirmed_b  # the paper's pretext is always confirmed
    assert state.top_transforms == ["crop+color"]
    # The screen is seed 0 at the full length; the pilot reruns the first cells at half.
    screened = {r.cell.transforms for r in runner.trained if r.seed == 0 and r.epochs == 4}
    assert screened == set(state.screen)
    assert {r.cell.transforms for r in runner.trained if r.epochs == 2} == set(state.screen[:4])
    # C: the other backbones with the best combination, paired with their jigsaw arm.
    c = study.comparisons("C")
    assert [(x.a, x.b) for x in c] == [("mobilenetv2/crop+color", "mobilenetv2/jigsaw"),
                                       ("mnasnet_a1/crop+color", "mnasnet_a1/jigsaw")]
    for stage in ("A", "B", "C"):
        for comparison in study.comparisons(stage):
            assert comparison.n >= 3 and "tied" not in comparison.verdict()


def test_a_seed_that_selected_a_cell_never_scores_it(tmp_path):
    study, runner = injected_study(tmp_path)
    study.run()
    for stage in ("A", "B", "C"):
        for cell in study.arms(stage):
            assert 0 not in study.arm_scores(cell), cell
        for comparison in study.comparisons(stage):
            assert 0 not in comparison.seeds
    assert all(r.seed >= 1 for r in runner.trained if r.cell.transforms in
               study.state.confirmed_b and r.epochs == 4 and r.seed != 0)


def test_seeds_are_added_only_to_inconclusive_comparisons_up_to_max_seeds(tmp_path):
    # A's best is far ahead (decided at 3 seeds); B's two best are 0.6 points apart with a noise
    # that 3 seeds cannot resolve.
    means = {**MEANS, "mobilenetv3small/jigsaw": 0.40, "crop+color": 0.45, "crop": 0.44}
    study, runner = injected_study(tmp_path, means, confirm=2)
    runner.noise = 0.006
    study.run()
    a = study.comparisons("A")
    assert all(x.decided for x in a) and all(x.n == 3 for x in a)  # no seed spent on A
    b_top = study.comparisons("B")[0]
    assert b_top.n > 3 and b_top.n <= 5
    extra = [r for r in runner.trained if r.seed > 3]
    assert extra and all(r.cell.backbone == "mobilenetv3small" or
                         r.cell.transforms == "crop+color" for r in extra)
    for stage in ("A", "B", "C"):
        for x in study.comparisons(stage):
            assert x.decided or x.n == 5  # nothing inconclusive is left below max_seeds


def test_the_long_check_runs_after_the_top_comparisons_seeds_and_before_the_others(tmp_path):
    # B's top comparison (crop+color against crop, 1 point apart) and C's second (MnasNet-A1's
    # combination half a point above its jigsaw) stay inconclusive at 3 seeds; crop is only in
    # the first, MnasNet-A1's combination only in the second.
    means = {**MEANS, "mobilenetv3small/jigsaw": 0.40, "crop+color": 0.45, "crop": 0.44,
             "mnasnet_a1/crop+color": 0.305}
    study, runner = injected_study(tmp_path, means, long_epochs=8)
    runner.noise = 0.015
    study.run()
    b_top, c_second = study.comparisons("B")[0], study.comparisons("C")[1]
    assert (b_top.a, b_top.b) == ("mobilenetv3small/crop+color", "mobilenetv3small/crop")
    assert c_second.a == "mnasnet_a1/crop+color" and not c_second.decided
    order = [("long" if r.epochs == 8 else "top" if r.cell.label == b_top.b
              else "other" if r.cell.label == c_second.a else "-")
             for r in runner.trained if r.seed > 3 or r.epochs == 8]
    assert "top" in order and "other" in order and "long" in order, order
    last_top, first_long = max(i for i, k in enumerate(order) if k == "top"), order.index("long")
    assert last_top < first_long < order.index("other"), order


def test_a_rerun_reads_every_run_back_and_trains_nothing(tmp_path):
    study, runner = injected_study(tmp_path, long_epochs=8)
    study.run()
    again, runner2 = injected_study(tmp_path, long_epochs=8)
    again.run()
    assert runner.trained and not runner2.trained
    fresh, _ = injected_study(tmp_path, long_epochs=8)  # a later invocation, before its stages
    for backbone in list(fresh.c.backbones) + [fresh.c.reference_backbone]:  # D's cached rows
        path = footprint_path(fresh.c.output_dir, backbone, runner.base.image_size)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json(path, {"params": 1})
    left = plan.plan(fresh)
    assert [left[k].runs for k in "ABCDL"] == [0] * 5, left
    assert left["D"].expected == 0 and left["L"].expected == 0, left
    assert [x.verdict() for x in again.comparisons("B")] == [
        x.verdict() for x in study.comparisons("B")]


def test_the_budget_stops_the_study_with_a_partial_report(tmp_path):
    study, _ = injected_study(tmp_path)
    study.costs.run_seconds = lambda cell, epochs: 10 ** 6  # no run fits
    study.budget = Budget(1)
    state = study.run()
    assert state.stopped and "would run past the budget" in state.stopped
    text = Report(study, study_base(), "cmd", 1.0, {}, 100).text()
    assert "**Partial report**" in text


def test_a_report_stopped_after_the_screen_says_what_waits_for_the_confirmation(tmp_path):
    study, _ = injected_study(tmp_path, triples=0)
    # the screen fits, its pilot does not: the arms are not chosen yet
    study.costs.run_seconds = lambda cell, epochs: 10 ** 6 if epochs == study.c.pilot_epochs else 1
    study.budget = Budget(1)
    assert "stage B" in study.run().stopped
    text = Report(study, study_base(), "cmd", 1.0, {}, 100).text()
    stage_b = text[text.index("## Stage B"):text.index("## Stage C")]
    assert "The screen: every cell trained once" in stage_b
    assert "which needs the confirmed arms' paired seeds (not run yet)" in stage_b
    assert "| crop+color | 44." in stage_b and "Confirmed arms: none chosen yet." in stage_b


def test_a_run_another_worker_holds_is_left_for_last_then_read_back(tmp_path):
    study, runner = injected_study(tmp_path)
    busy = "mobilenetv3small/jigsaw/seed1/4ep"
    runner.busy = {busy}
    order = []
    original = runner.score

    def score(run):
        order.append(run.key)
        return original(run)
    runner.score = score
    study.stage_a()
    assert order[0] == busy and order[-1] == busy  # tried first, then finished last


def test_a_damaged_record_is_set_aside_and_the_run_redone(tmp_path):
    study, runner = injected_study(tmp_path)
    study.stage_a()
    run = Run(Cell("mobilenetv2", "jigsaw"), 2, 4)
    path = runner.record_path(run)
    with open(path, "w") as f:
        f.write('{"linear_top1": 0.3')  # truncated
    runner.trained.clear()
    study.stage_a()
    assert runner.trained == [run]
    assert os.path.exists(path + ".damaged") and runner.record(run)["linear_top1"] > 0


def study_base():
    from mobile_pirl_tf.core.config import TrainConfig

    return TrainConfig(image_size=32, batch_size=8, data_dir="unused")


def test_report_has_every_section_and_the_csv_every_run(tmp_path):
    study, runner = injected_study(tmp_path, long_epochs=8)
    study.run()
    report = Report(study, study_base(), "python -m mobile_pirl_tf.study ...", 60.0,
                    plan.plan(study), 9469)
    report.write(log=lambda *_: None)
    text = open(tmp_path / "REPORT.md").read()
    for heading in ("## Answers", "## How long each run trains", "## Stage A", "## Stage B",
                    "## Stage C", "## Stage D", "## What this run can and cannot say",
                    "## Time", "Rank check, the first screen cells", "Kendall tau",
                    "Rank check, stage B's confirmed arms", "least significant difference"):
        assert heading in text, heading
    assert "tied" not in text.lower()
    d_rows = text.split("## Stage D")[1].split("\n\n")[1].splitlines()[2:]
    d_arms = {row.split(" | ")[0].lstrip("| ") for row in d_rows}
    assert d_arms == {cell.label for stage in "ABC" for cell in study.arms(stage)}, d_arms
    spent = text.split("by date and machine:")[1].split("\n\n")[1].splitlines()[2:]
    assert sum(int(row.split(" | ")[2]) for row in spent) == len(runner.recorded()), spent
    for name in ("heatmap.png", "pareto.png", "results.csv"):
        assert os.path.getsize(tmp_path / name) > 0
    with open(tmp_path / "results.csv") as f:
        rows = f.read().splitlines()
    assert len(rows) - 1 == len(report.records())
    assert {"screen", "pilot", "confirm", "long"} <= {r.split(",")[4] for r in rows[1:]}


def test_plan_costs_what_is_left_and_says_what_the_seeds_buy(tmp_path):
    study, runner = injected_study(tmp_path, hours=10)
    plans = plan.plan(study)
    assert plans["A"].runs == 9 and plans["A"].expected == pytest.approx(9 * 480.0)
    assert plans["B"].upper >= plans["B"].expected
    lines = plan.describe(study, plans)
    assert any("what the seeds buy" in line for line in lines)
    assert any("more seeds" in line for line in lines)
    study.stage_a()
    assert plan.plan(study)["A"].runs == 0


def test_a_finished_study_plans_nothing_left_to_train(tmp_path):
    study, _ = injected_study(tmp_path)
    study.run()
    plans = plan.plan(study)
    for stage in ("A", "B", "C"):
        assert plans[stage].runs == 0 and plans[stage].expected == 0, stage


def test_costs_fall_back_to_defaults_scaled_by_size_and_batch(tmp_path):
    base = study_base()
    costs = Costs(str(tmp_path / "costs.json"), base, steps_per_epoch=10, eval_images=100)
    small = costs.of("mobilenetv3small")
    assert not small.measured and small.step_patches > small.step_image
    assert costs.run_seconds(Cell("mobilenetv2", "jigsaw"), 4) > costs.run_seconds(
        Cell("mobilenetv3small", "jigsaw"), 4) > costs.run_seconds(
        Cell("mobilenetv3small", "crop"), 4)


def test_runs_recorded_on_this_machine_replace_the_calibrated_costs(tmp_path):
    costs = Costs(str(tmp_path / "costs.json"), study_base(), steps_per_epoch=10,
                  eval_images=100)
    jigsaw, crop = Cell("mobilenetv2", "jigsaw"), Cell("mobilenetv2", "crop")
    setup = costs.of("mobilenetv2").setup
    calibrated_crop = costs.train_seconds(crop, 4)
    record = {"machine": machine(), "epochs": 2, "steps_per_epoch": 10,
              "train_seconds": setup + 20 * 3.0, "probe_seconds": 50.0}
    costs.observe(jigsaw, {**record, "machine": "another CPU"})  # another machine's: ignored
    assert costs.step_seen == {} and costs.probe_seen == {}
    for step in (3.0, 5.0, 4.0):
        costs.observe(jigsaw, {**record, "train_seconds": setup + 20 * step})
    assert costs.train_seconds(jigsaw, 6) == pytest.approx(setup + 60 * 4.0)  # the median
    assert costs.run_seconds(jigsaw, 6) == pytest.approx(setup + 60 * 4.0 + 50.0)
    # The other view kind keeps its calibrated step; the backbone's probes are learned.
    assert costs.train_seconds(crop, 4) == calibrated_crop
    assert costs.probe_seconds("mobilenetv2") == 50.0


def test_runs_are_recorded_as_optuna_trials(tmp_path):
    study, runner = injected_study(tmp_path)
    trials = TrialLog(f"sqlite:///{tmp_path / 'study.db'}")
    study.on_record = trials.record
    study.stage_a()
    got = trials.study.get_trials()
    assert len(got) == 9 and {t.user_attrs["stage"] for t in got} == {"A"}
    again = TrialLog(f"sqlite:///{tmp_path / 'study.db'}")
    again.sync(Report(study, study_base(), "", 0, {}, 1).records())
    assert len(again.study.get_trials()) == 9  # nothing added twice
    elsewhere = TrialLog(f"sqlite:///{tmp_path / 'new.db'}")  # another machine's storage
    elsewhere.sync(Report(study, study_base(), "", 0, {}, 1).records())
    assert len(elsewhere.study.get_trials()) == 9  # rebuilt from the records


def test_phone_latency_is_read_from_benchmark_phone_results(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    (export / "report.json").write_text('{"backbone": "mobilenetv2"}')
    result = tmp_path / "int8.pixel.json"
    result.write_text(f'{{"model": "{export / "int8.tflite"}", "inference_avg_ms": 3.5}}')
    assert phone_latency([str(result)]) == {("mobilenetv2", "int8"): 3.5}


def test_config_refusals_are_one_line():
    from mobile_pirl_tf.core.errors import UsageError

    for bad, message in ((dict(transforms=()), "--transforms is empty"),
                         (dict(transforms=("crop+color",)), "is a composition"),
                         (dict(seeds=1), "--seeds must be at least 2"),
                         (dict(pilot_epochs=6), "--pilot_epochs")):
        with pytest.raises(UsageError, match=message):
            StudyConfig(**{"eval_data_dir": "x", **bad}).validate()


def test_dry_run_prints_the_plan_at_once_without_training(tmp_path, image_folder,
                                                          labelled_folder):
    proc = subprocess.run(
        [sys.executable, "-m", "mobile_pirl_tf.study", f"--data_dir={image_folder}",
         f"--eval_data_dir={labelled_folder}", "--image_size=32", "--batch_size=8",
         "--backbones=mobilenetv3small,mnasnet_b1", "--transforms=rotation,crop",
         f"--output_dir={tmp_path}", "--dry_run"], cwd=REPO, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DEFAULT costs" in proc.stdout and "would measure 2 backbone(s)" in proc.stdout
    assert "what the seeds buy" in proc.stdout
    assert not os.path.exists(tmp_path / "records")  # nothing trained
    empty = subprocess.run([sys.executable, "-m", "mobile_pirl_tf.study", "--transforms=",
                            f"--eval_data_dir={labelled_folder}"], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert empty.returncode == 2
    assert empty.stderr.strip().splitlines()[-1].startswith("error: --transforms is empty")


@pytest.mark.slow
def test_one_real_run_is_trained_scored_recorded_and_read_back(tmp_path, image_folder,
                                                               labelled_folder, tiny_config):
    from mobile_pirl_tf.data import labelled

    runner = CellRunner(tiny_config(data_dir=image_folder), str(tmp_path),
                        str(tmp_path / "runs"), labelled.folder_splits(labelled_folder),
                        log=lambda *_: None)
    run = Run(Cell("mobilenetv3small", "rotation"), 1, 1)
    record = runner.run(run)
    assert 0 <= record["linear_top1"] <= 1 and 0 <= record["knn_top1"] <= 1
    assert record["epochs"] == 1 and record["seed"] == 1 and record["machine"]
    assert os.path.exists(runner.record_path(run))
    assert os.path.exists(os.path.join(runner.run_dir(run), "encoder.keras"))
    assert not os.path.exists(os.path.join(runner.run_dir(run), "checkpoints"))
    runner.score = lambda run: pytest.fail("a recorded run is trained again")
    assert runner.run(run) == record
    baseline = runner.baseline("mobilenetv3small")
    assert 0 <= baseline["linear_top1"] <= 1 and runner.record_baseline("mobilenetv3small")
