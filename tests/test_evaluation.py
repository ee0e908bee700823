import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import REPO, tiny, write_labelled_folder

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.data import labelled
from mobile_pirl_tf.evaluation import features, probes
from mobile_pirl_tf.models import backbones, batchnorm
from mobile_pirl_tf.training import fit as training


@pytest.mark.slow
def test_linear_probe_separable_and_shuffled():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (5, 32)) * 6
    y_train, y_test = rng.integers(0, 5, 500), rng.integers(0, 5, 300)
    x_train = centres[y_train] + rng.normal(0, 1, (500, 32))
    x_test = centres[y_test] + rng.normal(0, 1, (300, 32))
    good = probes.evaluate_features("linear", x_train, y_train, x_test, y_test, 5)
    assert good["top1"] > 0.99 and good["top5"] == 1.0
    shuffled = probes.evaluate_features("linear", x_train, rng.permutation(y_train), x_test,
                                            y_test, 5)
    assert shuffled["top1"] < 0.35  # chance is 0.2


def test_knn_matches_numpy_reference():
    rng = np.random.default_rng(1)
    train, test = rng.normal(size=(60, 8)), rng.normal(size=(15, 8))
    labels = rng.integers(0, 4, 60)
    got = probes.knn_scores(train, labels, test, 4, k=20, temperature=0.07)
    tn = train / np.linalg.norm(train, axis=1, keepdims=True)
    qn = test / np.linalg.norm(test, axis=1, keepdims=True)
    sims = qn @ tn.T
    expected = np.zeros((15, 4))
    for i in range(15):
        nearest = np.argsort(-sims[i])[:20]
        for j in nearest:
            expected[i, labels[j]] += np.exp(sims[i, j] / 0.07)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


@pytest.fixture()
def encoder_dir(tmp_path):
    keras.utils.set_random_seed(0)
    encoder = backbones.build_encoder(backbones.build_backbone("mobilenetv3small"), 32)
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    return tmp_path, path


def test_report_fields_and_feature_cache(encoder_dir, labelled_folder, monkeypatch):
    model_dir, path = encoder_dir
    encoder, _ = backbones.load_encoder(str(model_dir))
    train, test = labelled.folder_splits(labelled_folder)
    probes.evaluate_encoder(encoder, path, train, test, "knn", str(model_dir))
    with open(model_dir / "eval_knn.json") as f:
        stored = json.load(f)
    for field in ("protocol", "top1", "n_train", "n_test", "encoder", "image_size", "seconds"):
        assert field in stored
    assert "top5" not in stored  # only 3 classes
    assert stored["n_train"] == 30 and stored["n_test"] == 12 and stored["image_size"] == 32
    cached = sorted(os.listdir(model_dir / "features"))
    assert len(cached) == 2

    # A second protocol reuses the cached features: the encoder is not run again.
    monkeypatch.setattr(encoder, "predict_on_batch", lambda *a: pytest.fail("features recomputed"))
    probes.evaluate_encoder(encoder, path, train, test, "linear", str(model_dir))
    assert sorted(os.listdir(model_dir / "features")) == cached
    monkeypatch.undo()

    # Invalidated when the encoder file changes or the data changes.
    os.utime(path, ns=(1, 1))
    features.extract_features(encoder, path, train, 32, str(model_dir / "features"))
    assert len(os.listdir(model_dir / "features")) == 3
    extra = write_labelled_folder(str(model_dir / "more"), n_train=11)
    train2, _ = labelled.folder_splits(extra)
    assert features.cache_key(path, train2, 32) != features.cache_key(path, train, 32)


def test_error_cases(tmp_path, labelled_folder):
    with pytest.raises(UsageError, match="no encoder"):
        backbones.load_encoder(str(tmp_path))
    with pytest.raises(UsageError, match="no train/"):
        labelled.folder_splits(str(tmp_path))
    write_labelled_folder(str(tmp_path / "bad"))
    os.makedirs(tmp_path / "bad" / "test" / "purple")
    labelled.folder_splits(str(tmp_path / "bad"))  # an empty class folder is not a class
    from PIL import Image

    Image.new("RGB", (8, 8), "purple").save(tmp_path / "bad" / "test" / "purple" / "a.png")
    with pytest.raises(UsageError, match="test has classes that train/ lacks: purple"):
        labelled.folder_splits(str(tmp_path / "bad"))


def test_cli_random_baseline_and_size_mismatch(tmp_path, labelled_folder, encoder_dir):
    def cli(*args):
        return subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"), *args],
                              capture_output=True, text=True, timeout=300, cwd=REPO)
    out = tmp_path / "random"
    result = cli("--baseline=random", "--backbone=mobilenetv3small", "--image_size=32",
                 f"--data_dir={labelled_folder}", f"--output_dir={out}", "--protocol=knn")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "random" in result.stdout and json.load(open(out / "eval_knn.json"))["protocol"] == "knn"
    _, path = encoder_dir
    result = cli(f"--encoder={path}", "--image_size=64", f"--data_dir={labelled_folder}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: --image_size=64 does not match the encoder's input size 32")


@pytest.mark.slow
def test_knn_monitor_logs_knn_top1(tmp_path, image_folder, labelled_folder):
    config = tiny(tmp_path / "run", image_folder, monitor_data_dir=labelled_folder)
    from mobile_pirl_tf.evaluation.monitor import KNNMonitor

    with pytest.raises(UsageError, match="--monitor_data_dir needs the kNN monitor"):
        training.train(config)  # a library call that forgets to hand it in is told so
    summary = training.train(config, extra_callbacks=[KNNMonitor(labelled_folder, 32)])
    assert 0.0 <= summary["history"]["knn_top1"][0] <= 1.0


def test_bn_recalibration_fixes_collapsed_random_features(labelled_folder):
    keras.utils.set_random_seed(0)
    encoder = backbones.build_encoder(backbones.build_backbone("mobilenetv3small"), 32)
    train, _ = labelled.folder_splits(labelled_folder)
    batch = next(iter(labelled.split_images(train, 32)))
    before = encoder(batch, training=False).numpy()
    assert before.std(0).mean() < 1e-6  # moving statistics at init: features collapse
    assert features.recalibrate(encoder, train, 32, num_images=30) == 30
    after = encoder(batch, training=False).numpy()
    assert after.std(0).mean() > 1e-3
    bns = [layer for layer in encoder._flatten_layers()
           if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.momentum == 0.999 for layer in bns)  # MobileNetV3's own momentum restored


def test_protocol_evaluates_train_py_encoders_as_written_and_baselines_recalibrated(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    encoder = str(run / "encoder.keras")
    assert probes.protocol_bn_images(encoder) == batchnorm.BN_RECALIBRATION_IMAGES  # no record
    (run / "run.json").write_text(json.dumps(
        {"encoder_bn_statistics": {"source": "training images, centre crops", "images": 300}}))
    assert probes.protocol_bn_images(encoder) == 0
    for kind in ("random", "supervised"):
        assert probes.protocol_bn_images(encoder, kind) == batchnorm.BN_RECALIBRATION_IMAGES
    (run / "run.json").write_text(json.dumps(
        {"encoder_bn_statistics": {"source": "training (not re-estimated)"}}))
    assert probes.protocol_bn_images(encoder) == batchnorm.BN_RECALIBRATION_IMAGES
