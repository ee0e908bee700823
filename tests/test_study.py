"""The study (experiments A-D): halving with injected scores, intervals and verdicts against a
SciPy-free reference, and a tiny real study: report, figures, CSV, a failed cell recorded, the
plan's estimate against the run's time, and a rerun that trains nothing new."""

import csv
import dataclasses
import math
import os
import time

import numpy as np
import pytest
from absl import flags

from mobile_pirl_tf import study, study_report
from mobile_pirl_tf.training import fit as training

T_975_DF2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom


def test_rungs_and_halving_rule():
    assert study.rungs(1, 9, 3) == [1, 3, 9]
    assert study.rungs(1, 4, 3) == [1, 3, 4]
    assert study.rungs(2, 2, 3) == [2]
    scores = {"a": 0.1, "b": 0.5, "c": 0.3, "d": 0.4, "e": 0.2}
    assert study.keep_best(scores, 3) == ["b", "d"]
    assert study.keep_best(scores, 2) == ["b", "d", "c"]
    assert study.keep_best({"a": 0.1}, 3) == ["a"]
    assert study.keep_best(scores, 3, minimum=3) == ["b", "d", "c"]


def test_triples_extend_the_best_pairs_with_the_best_singles():
    names = ["jigsaw", "rotation", "crop", "color"]
    singles = {"jigsaw": 0.4, "rotation": 0.3, "crop": 0.5, "color": 0.1}
    pairs = {"jigsaw+crop": 0.6, "rotation+color": 0.2, "crop+color": 0.55, "jigsaw+rotation": 0}
    assert study.stage_b_triples(singles, pairs, names) == [
        "jigsaw+rotation+crop", "jigsaw+crop+color", "rotation+crop+color"]
    assert study.stage_b_cells(["a", "b", "c"]) == ["a", "b", "c", "a+b", "a+c", "b+c"]


def test_interval_matches_the_t_reference():
    runs = [{"m": 0.40}, {"m": 0.43}, {"m": 0.46}]
    s = study_report.summary(runs, "m")
    values = np.array([0.40, 0.43, 0.46])
    half = T_975_DF2 * values.std(ddof=1) / math.sqrt(3)
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.43)
    assert s["half"] == pytest.approx(half)
    assert (s["low"], s["high"]) == (pytest.approx(0.43 - half), pytest.approx(0.43 + half))
    one = study_report.summary([{"m": 0.5}], "m")
    assert one["n"] == 1 and math.isnan(one["half"])


def test_verdict_names_a_winner_only_when_intervals_separate():
    far = [("a", [{"linear_top1": v} for v in (0.60, 0.61, 0.62)]),
           ("b", [{"linear_top1": v} for v in (0.50, 0.51, 0.52)])]
    assert study_report.verdict(far) == ("winner", ["a"])
    close = [("a", [{"linear_top1": v} for v in (0.50, 0.56, 0.62)]),
             ("b", [{"linear_top1": v} for v in (0.50, 0.53, 0.55)]),
             ("c", [{"linear_top1": v} for v in (0.20, 0.21, 0.22)])]
    assert study_report.verdict(close) == ("tied", ["a", "b"])
    assert study_report.verdict(far[:1]) == ("only", ["a"])


def test_pareto_front():
    points = [(1.0, 0.5), (2.0, 0.6), (1.5, 0.4), (3.0, 0.6), (0.5, 0.3)]
    assert study_report.pareto_front(points) == [4, 0, 1]


class FakeRunner:
    """Injected kNN scores per cell (growing with epochs), no training."""

    def __init__(self, score):
        self.score, self.done = score, {}

    def scores(self, cell):
        return self.done.get(cell.key, {})

    def run(self, cell, epochs, linear=False):
        result = {"knn_top1": self.score[cell.transforms] + epochs / 100, "seconds": 1.0}
        if linear:
            result["linear_top1"] = result["knn_top1"] + 0.01 * cell.seed
        self.done.setdefault(cell.key, {})[epochs] = result
        return result


class FakeCosts:
    def train_seconds(self, cell, start, end):
        return 1.0

    def probe_seconds(self, cell, linear=False):
        return 0.0


class Flags:
    min_epochs, max_epochs, eta, finalists, seeds = 1, 9, 3, 2, 3


def test_halving_keeps_the_best_cells_and_records_them_in_optuna(tmp_path):
    from optuna.trial import TrialState

    names = ["rotation", "crop", "cutout", "color", "sobel", "noise", "blur", "flip", "jigsaw"]
    score = dict(zip(names, [0.30, 0.10, 0.50, 0.20, 0.45, 0.05, 0.40, 0.15, 0.35]))
    cells = [study.Cell("b", name) for name in names]
    runner = FakeRunner(score)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    stage = study.Stage("X", cells, runner, FakeCosts(), study.Budget(0), Flags, storage,
                        log=lambda *_: None)
    results = stage.run()
    # 9 cells -> 3 at 3 epochs (the best three at 1 epoch) -> 2 at 9 epochs (--finalists).
    assert sorted(stage.rung_scores[3]) == sorted(f"b/{t}/seed0" for t in ("cutout", "sobel",
                                                                          "blur"))
    assert list(stage.rung_scores[9]) == ["b/cutout/seed0", "b/sobel/seed0"]
    assert [r["cell"].transforms for r in results] == ["cutout", "sobel"]
    assert [len(r["runs"]) for r in results] == [3, 3]  # the finalists under 3 seeds
    import optuna

    (name,) = optuna.get_all_study_names(storage)
    assert name.startswith("stage-X-")  # named after its candidates
    trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    states = {t.params["cell"]: t.state for t in trials}
    assert states["b/cutout/seed0"] == states["b/sobel/seed0"] == TrialState.COMPLETE
    assert sum(s == TrialState.PRUNED for s in states.values()) == 7
    reported = {t.params["cell"]: sorted(t.intermediate_values) for t in trials}
    assert reported["b/blur/seed0"] == [1, 3] and reported["b/flip/seed0"] == [1]
    assert reported["b/sobel/seed0"] == [1, 3, 9]


@pytest.mark.slow
def test_tiny_study_reports_records_failures_and_reruns_without_training(
        tmp_path, image_folder, labelled_folder, monkeypatch):
    if "backbones" not in flags.FLAGS:
        study.define_flags()
    out = str(tmp_path / "study")
    argv = ["study", f"--data_dir={image_folder}", f"--eval_data_dir={labelled_folder}",
            "--image_size=32", "--batch_size=4", "--steps_per_epoch=2", "--num_negatives=4",
            "--embedding_dim=8", "--bn_recalibration_images=16",
            "--backbones=mobilenetv3small,mnasnet_a1", "--transforms=rotation,jigsaw",
            "--seeds=2", "--finalists=1", "--top_k=1", "--min_epochs=1", "--max_epochs=1",
            f"--output_dir={out}"]
    flags.FLAGS(argv + ["--dry_run"])
    f = flags.FLAGS
    base = study.cli.config_from_flags(study.config.TrainConfig, transforms="jigsaw",
                                       model_dir="", backbone="mobilenetv3small").validate()
    logs = []
    planned = study.run_study(f, base, log=logs.append)["plan_seconds"]
    assert any(line.startswith("plan (") for line in logs)
    assert not os.path.exists(os.path.join(out, "REPORT.md"))

    real_train, calls = training.train, []

    def flaky_train(config, *args, **kwargs):
        calls.append(f"{config.backbone}/{config.transforms}/seed{config.seed}")
        if config.backbone == "mnasnet_a1" and config.transforms == "rotation":
            raise RuntimeError("simulated crash")
        return real_train(config, *args, **kwargs)

    monkeypatch.setattr(training, "train", flaky_train)
    flags.FLAGS(argv + ["--nodry_run"])
    started = time.time()
    state = study.run_study(f, base, log=logs.append)
    took = time.time() - started
    total = sum(planned.values())
    assert total / 2 <= took <= 2 * total, (planned, took)

    with open(os.path.join(out, "REPORT.md")) as fh:
        report = fh.read()
    for title in ("## Stage A", "## Stage B", "## Stage C", "## Stage D"):
        assert title in report
    for png in ("heatmap.png", "pareto.png"):
        with open(os.path.join(out, png), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "results.csv")) as fh:
        rows = list(csv.DictReader(fh))
    assert {r["stage"] for r in rows} >= {"A", "B", "C"}
    assert all(0 <= float(r["knn_top1"]) <= 1 for r in rows)
    assert any(r["role"] == "finalist" and r["linear_top1"] for r in rows)
    failed = [k for s in state["stages"].values() for k in s.get("failed", {})]
    if "mnasnet_a1/rotation/seed0" in calls:  # stage C ran it (rotation was a top combination)
        assert failed == ["mnasnet_a1/rotation/seed0"]
        assert calls.count("mnasnet_a1/rotation/seed0") == 2  # retried once
        assert "failed: RuntimeError: simulated crash" in report

    # A rerun reads every finished score back: only a failed cell is tried again.
    calls.clear()
    study.run_study(f, base, log=logs.append)
    assert set(calls) <= {"mnasnet_a1/rotation/seed0"}


def test_a_cell_another_worker_holds_is_left_for_last_then_read_back(tmp_path, monkeypatch):
    names = ["rotation", "crop", "color"]
    runner = FakeRunner(dict(zip(names, [0.3, 0.2, 0.1])))
    real_run, order = runner.run, []

    def shared_run(cell, epochs, linear=False):
        if cell.transforms == "rotation" and not order.count("rotation"):
            order.append("rotation")
            raise study.CellBusy("in use by train.py process 1 on elsewhere")
        order.append(cell.transforms)
        return real_run(cell, epochs, linear)

    runner.run = shared_run
    monkeypatch.setattr(study, "BUSY_POLL_SECONDS", 0.0)

    class OneRung(Flags):
        min_epochs = max_epochs = 1
        finalists, seeds = 1, 1

    stage = study.Stage("Y", [study.Cell("b", n) for n in names], runner, FakeCosts(),
                        study.Budget(0), OneRung, f"sqlite:///{tmp_path / 's.db'}",
                        log=lambda *_: None)
    results = stage.run()
    assert order[:4] == ["rotation", "crop", "color", "rotation"]  # busy one retried last
    assert [r["cell"].transforms for r in results] == ["rotation"]


def test_phone_latency_is_read_from_benchmark_phone_results(tmp_path):
    import json

    export = tmp_path / "run" / "export"
    export.mkdir(parents=True)
    (export / "report.json").write_text(json.dumps({"backbone": "mobilenetv2"}))
    result = tmp_path / "int8.Pixel_7.json"
    result.write_text(json.dumps({"model": str(export / "int8.tflite"),
                                  "inference_avg_ms": 3.25}))
    assert study.phone_latency([str(result)]) == {("mobilenetv2", "int8"): 3.25}
    (export / "report.json").unlink()
    with pytest.raises(study.UsageError, match="no report.json"):
        study.phone_latency([str(result)])


def test_a_stage_cut_by_the_budget_reports_the_seeds_it_finished(tmp_path):
    names = ["rotation", "crop", "color"]
    runner = FakeRunner(dict(zip(names, [0.3, 0.2, 0.1])))

    class Budgeted(study.Budget):
        def check(self, estimate, what):  # room for the halving and two seeded runs
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls > 3 + 2:
                raise study.OutOfBudget(what)

    class OneRung(Flags):
        min_epochs = max_epochs = 1
        finalists, seeds = 2, 3

    state = {"stages": {}}
    with pytest.raises(study.OutOfBudget):
        study._stage("Z", [study.Cell("b", n) for n in names], OneRung, runner, FakeCosts(),
                     Budgeted(0), f"sqlite:///{tmp_path / 's.db'}", state, lambda *_: None)
    finalists = state["stages"]["Z"]["finalists"]
    assert [f["cell"].transforms for f in finalists] == ["rotation", "crop"]
    assert [len(f["runs"]) for f in finalists] == [2, 0]  # the first's seeds 0 and 1 fitted


def test_calibration_trains_once_per_backbone_and_times_each_kinds_step(tmp_path, monkeypatch):
    trained, stepped = [], []

    def call_costs(base, cell, scratch_dir, step_s):
        trained.append(cell.key)
        return {"setup_s": 30.0 - 2 * step_s, "probe_setup_s": 2.0, "image_s": 0.001}

    def step_seconds(base, cell):
        stepped.append(cell.kind)
        return {"patches": 0.5, "image": 0.25}[cell.kind]

    monkeypatch.setattr(study, "measure_call_costs", call_costs)
    monkeypatch.setattr(study, "measure_step_seconds", step_seconds)
    monkeypatch.setattr(study, "two_step_train", lambda *a: trained.append("warm-up"))
    base = training.TrainConfig(image_size=32, batch_size=4)
    costs = study.Costs(str(tmp_path / "costs.json"), base, 10, 100)
    for backbone in ("a", "b"):
        for kind in ("image", "patches"):
            costs.measure(backbone, kind, str(tmp_path), log=lambda *_: None)
    assert trained == ["warm-up", "a/rotation/seed0", "b/rotation/seed0"]
    assert stepped == ["image", "patches"] * 2
    image, patches = (costs.table[f"a/{k}/32px/batch4"] for k in ("image", "patches"))
    assert image["setup_s"] == patches["setup_s"] == 29.5 and patches["step_s"] == 0.5
    # Read back, not measured again.
    again = study.Costs(str(tmp_path / "costs.json"), base, 10, 100)
    assert again.measure("a", "patches", str(tmp_path), log=lambda *_: None) == patches
    assert len(trained) == 3 and len(stepped) == 4


def test_plan_costs_the_expected_survivors_and_the_dearest_until_scores_decide():
    class RateCosts(FakeCosts):
        def train_seconds(self, cell, start, end):
            return (end - start) * (10.0 if cell.backbone == "dear" else 1.0)

    class OneFinalist(Flags):
        finalists, seeds = 1, 2

    cells = [study.Cell(b, "jigsaw") for b in ("cheap", "other", "dear")]
    runner = FakeRunner({"jigsaw": 0.0})
    stage = study.Stage("P", cells, runner, RateCosts(), study.Budget(0), OneFinalist, None)
    # Rung 1: all three (1 + 1 + 10); rungs 3 and 9 and the second seed's 9 epochs: one cell,
    # each a third likely (mean rate 4) or the dear one (rate 10).
    assert stage.planned_seconds() == pytest.approx(12 + 4 * (2 + 6 + 9))
    assert stage.planned_seconds(dearest=True) == pytest.approx(12 + 10 * (2 + 6 + 9))
    # Once rung 1 is scored, its best cell is the one costed, whichever way.
    runner.done = {"cheap/jigsaw/seed0": {1: {"knn_top1": 0.2}},
                   "other/jigsaw/seed0": {1: {"knn_top1": 0.3}},
                   "dear/jigsaw/seed0": {1: {"knn_top1": 0.1}}}
    assert stage.planned_seconds() == stage.planned_seconds(dearest=True) == pytest.approx(17)


def test_stages_and_report_from_injected_scores(tmp_path, monkeypatch):
    """A-D end to end without training: who goes on, what stage C trains, the report's four
    sections with the plan against the time taken, the CSV and both figures."""
    runner = FakeRunner({"jigsaw": 0.25})  # "small"'s cells; every cell of "big" scores 0.5
    real_run = runner.run

    def run(cell, epochs, linear=False):
        if cell.backbone == "small":
            return real_run(cell, epochs, linear)
        result = {"knn_top1": 0.5 + epochs / 100, "seconds": 1.0}
        if linear:
            result["linear_top1"] = 0.5 + cell.seed / 100
        runner.done.setdefault(cell.key, {})[epochs] = result
        return result

    runner.run = run
    runner.output_dir = str(tmp_path)
    cost = {"params": 1e6, "macs": 5e6, "float32_bytes": 4e6, "int8_bytes": 1e6,
            "float32_ms": 1.0, "int8_ms": 0.5}
    monkeypatch.setattr(study, "backbone_cost", lambda backbone, *a: {
        **cost, "int8_ms": 2.0 if backbone == "big" else 0.5})
    monkeypatch.setattr(study, "baselines", lambda *a, **k: {"random": 0.1})

    class F(Flags):
        backbones, transforms = ["small", "big"], ["jigsaw", "rotation", "crop", "color"]
        study_backbone, top_k, phone_results, output_dir = None, 1, (), str(tmp_path)
        min_epochs, max_epochs, eta, finalists, seeds = 1, 3, 3, 2, 2

    base = training.TrainConfig(image_size=32)
    state = {"flags": {k: getattr(F, k, 0) for k in study.FLAG_NAMES}, "machine": "test",
             "base": dataclasses.asdict(base), "stages": {}, "stopped": None,
             "plan_seconds": {"A": 60, "B": 120, "C": 60, "D": 0},
             "plan_seconds_dearest": {"A": 90, "B": 150, "C": 90, "D": 0},
             "splits": {"train": 10, "test": 5}, "steps_per_epoch": 2, "wall_seconds": 300}
    study._run_stages(F, base, runner, FakeCosts(), study.Budget(0),
                      f"sqlite:///{tmp_path / 's.db'}", state, None, lambda *_: None)
    assert state["study_backbone"] == "big"  # A's winner goes on to B
    assert state["top_transforms"] == ["jigsaw"]  # every B cell of "big" scores alike
    assert state["stages"]["C"]["cells"] == ["small/jigsaw/seed0", "big/jigsaw/seed0"]
    assert {row["cell"].backbone for row in state["stages"]["D"]["rows"]} == {"small", "big"}
    study_report.write(str(tmp_path), state, runner, log=lambda *_: None)
    report = (tmp_path / "REPORT.md").read_text()
    for title in ("## Stage A", "## Stage B", "## Stage C", "## Stage D"):
        assert title in report
    assert "planned time of the stage 1 min (up to 2 min if the dearest cells go on)" in report
    with open(tmp_path / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["stage"] for r in rows} == {"A", "B", "B3", "C"}
    for png in ("heatmap.png", "pareto.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
