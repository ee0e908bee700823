"""The transformation sweep on an injected runner (the study's runner with its training
replaced): CSV and heat-map, a failed cell recorded without stopping the sweep, finished cells
skipped on a second run. The runner's real training is tested in test_study.py."""

import csv
import os

import pytest

from mobile_pirl_tf.core.config import TrainConfig
from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.study import sweep
from mobile_pirl_tf.study.cells import CellRunner


def test_cells_are_singles_then_unordered_pairs_then_extras():
    assert sweep.cells(["crop", "color", "blur"], ["jigsaw"]) == [
        ("crop", "crop", ""), ("color", "color", ""), ("blur", "blur", ""),
        ("crop+color", "crop", "color"), ("crop+blur", "crop", "blur"),
        ("color+blur", "color", "blur"), ("jigsaw", "jigsaw", "")]


class FlakyRunner(CellRunner):
    """Scores injected by transform; the first "color" run crashes."""

    def __init__(self, output_dir, splits):
        super().__init__(None, output_dir, os.path.join(output_dir, "cells"), splits,
                         log=lambda *_: None)
        self.calls, self.crashed = [], False

    def score(self, run):
        self.calls.append(run.cell.transforms)
        if run.cell.transforms == "color" and not self.crashed:
            self.crashed = True
            raise RuntimeError("simulated crash\nwith a second line")
        value = {"rotation": 0.31, "color": 0.33, "rotation+color": 0.35}[run.cell.transforms]
        return {"linear_top1": value, "linear_top5": 0.8, "knn_top1": value - 0.02}


def test_sweep_writes_csv_and_png_records_failures_and_skips_finished(tmp_path,
                                                                     labelled_folder):
    from mobile_pirl_tf.data import labelled

    base = TrainConfig(backbone="mobilenetv3small", image_size=32, epochs=1, data_dir="unused")
    out = str(tmp_path / "sweep")
    runner = FlakyRunner(out, labelled.folder_splits(labelled_folder))
    logs = []
    rows = sweep.run_sweep(base, ["rotation", "color"], labelled_folder, out, log=logs.append,
                           runner=runner)
    with open(os.path.join(out, "results.csv")) as f:
        table = {r["spec"]: r for r in csv.DictReader(f)}
    assert list(table) == ["rotation", "color", "rotation+color"]
    assert table["color"]["status"] == "failed"
    assert table["color"]["error"] == "RuntimeError: simulated crash with a second line"
    for spec in ("rotation", "rotation+color"):
        assert table[spec]["status"] == "done"
        assert 0.0 <= float(table[spec]["top1"]) <= 1.0
        assert table[spec]["backbone"] == "mobilenetv3small" and table[spec]["image_size"] == "32"
    assert any("[cell 2/3] color: running (2 left, about" in line for line in logs)

    png = sweep.heatmap(rows, ["rotation", "color"], os.path.join(out, "heatmap.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # Second run: only the failed cell is trained again.
    runner.calls.clear()
    rows = sweep.run_sweep(base, ["rotation", "color"], labelled_folder, out, log=logs.append,
                           runner=runner)
    assert runner.calls == ["color"]
    assert [r["status"] for r in rows] == ["done", "done", "done"]
    assert any(line.startswith("sweep: 3 cells, 2 already done, 1 to run") for line in logs)


def test_sweep_rejects_unknown_transform_and_an_empty_list(tmp_path, labelled_folder):
    with pytest.raises(UsageError, match="unknown transform 'mixup'"):
        sweep.run_sweep(TrainConfig(), ["crop", "mixup"], labelled_folder, str(tmp_path / "s"))
    with pytest.raises(UsageError, match="--transforms is empty"):
        sweep.run_sweep(TrainConfig(), [], labelled_folder, str(tmp_path / "s"))
