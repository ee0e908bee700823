"""A user's mistakes and a machine's faults on tiny runs: one process per run folder (a stale
lock taken over), no non-finite state saved, a learning rate that may change on resume, and
bit-identical runs under one seed (a killed and resumed run included)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.training import fit as training
from mobile_pirl_tf.training import run_folder


def cfg(model_dir, data_dir, **overrides):
    return tiny(model_dir, data_dir, **{**dict(steps_per_epoch=None), **overrides})


def _files(folder):
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


@pytest.fixture(scope="module")
def one_epoch_run(image_folder, tmp_path_factory):
    """A finished one-epoch run; each test works on its own copy."""
    run = tmp_path_factory.mktemp("one-epoch") / "run"
    training.train(cfg(run, image_folder))
    return run


def copy_of(run, tmp_path):
    import shutil

    return shutil.copytree(run, tmp_path / "run")


@pytest.mark.slow
def test_a_second_process_on_the_folder_is_refused_and_a_stale_lock_taken_over(
        tmp_path, image_folder, one_epoch_run):
    run = copy_of(one_epoch_run, tmp_path)
    before = _files(run)
    with run_folder.run_lock(str(run)):  # held, as a running train.py holds it
        with pytest.raises(UsageError, match=f"in use by train.py process {os.getpid()} on "):
            training.train(cfg(run, image_folder, epochs=2))
    after = _files(run)
    after.pop("run.lock"), before.pop("run.lock")
    assert after == before  # nothing of the first run was touched
    # A lock file left by a killed process (no flock held) does not block.
    (run / "run.lock").write_text("train.py process 999999 on elsewhere\n")
    assert training.train(cfg(run, image_folder, epochs=2))["epochs_done"] == 2


@pytest.mark.slow
def test_divergence_saves_no_non_finite_state_and_the_learning_rate_may_change(
        tmp_path, image_folder, one_epoch_run):
    run = copy_of(one_epoch_run, tmp_path)
    good = tf.train.latest_checkpoint(str(run / "checkpoints"))
    encoder_before = _files(run)["encoder.keras"]
    with pytest.raises(FloatingPointError, match="lower --learning_rate"):
        training.train(cfg(run, image_folder, epochs=2, learning_rate=1e30))
    assert tf.train.latest_checkpoint(str(run / "checkpoints")) == good
    assert _files(run)["encoder.keras"] == encoder_before
    reader = tf.train.load_checkpoint(good)
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            assert np.isfinite(value).all(), name
    # The advice works: a lower learning rate resumes the run, and run.json records it.
    summary = training.train(cfg(run, image_folder, epochs=2, learning_rate=0.01))
    assert summary["epochs_done"] == 2 and summary["resumed_from_epoch"] == 1
    assert summary["learning_rate_changes"] == [{"epoch": 1, "from": 0.06, "to": 0.01}]
    assert json.load(open(run / "config.json"))["learning_rate"] == 0.01


def test_a_truncated_encoder_is_reported_as_such(tmp_path):
    from mobile_pirl_tf.models import backbones

    path = tmp_path / "encoder.keras"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(UsageError, match="not a readable Keras model.*rerun the same train.py"):
        backbones.load_encoder(encoder_path=str(path))


@pytest.mark.slow
def test_killed_mid_run_then_resumed_gives_the_encoder_of_an_uninterrupted_run(
        tmp_path, image_folder):
    """Also the seed's contract: two runs under one seed (here one in this process, one
    killed in another and resumed here) give bit-identical encoders."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    args = dict(backbone="mobilenetv3small", image_size=32, batch_size=4, epochs=3,
                num_negatives=16, data_dir=image_folder, verbose=0, bn_recalibration_images=16,
                seed=2)
    training.train(training.TrainConfig(**args, model_dir=str(tmp_path / "whole")))
    keras.backend.clear_session()
    run = tmp_path / "killed"
    command = [sys.executable, os.path.join(REPO, "train.py")] + [
        f"--{k}={v}" for k, v in args.items()] + [f"--model_dir={run}"]
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (run / "checkpoints" / "ckpt-1.index").exists():  # mid-run: epoch 1 saved
        assert child.poll() is None and time.time() < deadline, "the child ended or hung"
        time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    assert not (run / "encoder.keras").exists()
    summary = training.train(training.TrainConfig(**args, model_dir=str(run)))
    assert summary["resumed_from_epoch"] in (1, 2)
    assert len(summary["history"]["loss"]) == 3  # the killed invocation's epochs kept
    whole = keras.models.load_model(str(tmp_path / "whole" / "encoder.keras"))
    resumed = keras.models.load_model(str(run / "encoder.keras"))
    for x, y in zip(whole.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(x, y)
