"""The transformation sweep at tiny scale: CSV and heat-map, a failed cell recorded without
stopping the sweep, finished cells skipped on a second run."""

import csv
import os

import pytest

from mobile_pirl_tf import sweep
from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.training import fit as training


def test_cells_are_singles_then_unordered_pairs_then_extras():
    assert sweep.cells(["crop", "color", "blur"], ["jigsaw"]) == [
        ("crop", "crop", ""), ("color", "color", ""), ("blur", "blur", ""),
        ("crop+color", "crop", "color"), ("crop+blur", "crop", "blur"),
        ("color+blur", "color", "blur"), ("jigsaw", "jigsaw", "")]


@pytest.mark.slow
def test_sweep_writes_csv_and_png_records_failures_and_skips_finished(
        tmp_path, image_folder, labelled_folder, monkeypatch):
    base = training.TrainConfig(backbone="mobilenetv3small", image_size=32, batch_size=4,
                                steps_per_epoch=1, epochs=1, num_negatives=4, embedding_dim=8,
                                verbose=0, data_dir=image_folder)
    out = str(tmp_path / "sweep")
    real_train = training.train
    calls, crashed = [], []

    def flaky_train(config, *args, **kwargs):
        calls.append(config.transforms)
        if config.transforms == "color" and not crashed:
            crashed.append(True)
            raise RuntimeError("simulated crash\nwith a second line")
        return real_train(config, *args, **kwargs)

    monkeypatch.setattr(training, "train", flaky_train)
    logs = []
    rows = sweep.run_sweep(base, ["rotation", "color"], labelled_folder, out, log=logs.append)
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
    calls.clear()
    rows = sweep.run_sweep(base, ["rotation", "color"], labelled_folder, out, log=logs.append)
    assert calls == ["color"]
    assert [r["status"] for r in rows] == ["done", "done", "done"]
    assert any(line.startswith("sweep: 3 cells, 2 already done, 1 to run") for line in logs)


def test_sweep_rejects_unknown_transform(tmp_path, labelled_folder):
    with pytest.raises(UsageError, match="unknown transform 'mixup'"):
        sweep.run_sweep(training.TrainConfig(), ["crop", "mixup"], labelled_folder,
                        str(tmp_path / "s"))
