"""train() and train.py end to end on a small generated folder: checkpoints, encoder.keras,
run.json, resume with the memory bank restored, refusals that keep the user's files."""

import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, tiny

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.data import pipeline
from mobile_pirl_tf.models import backbones, batchnorm
from mobile_pirl_tf.training import fit as training
from mobile_pirl_tf.training import run_folder


def cfg(model_dir, data_dir, **overrides):
    return tiny(model_dir, data_dir, **{**dict(epochs=2, num_negatives=64), **overrides})


@pytest.fixture(scope="module")
def two_epoch_run(image_folder, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run")
    # More batch-norm images asked than the data holds: all 32 are used.
    summary = training.train(cfg(model_dir, image_folder, bn_recalibration_images=100))
    return model_dir, summary


def test_two_epochs_write_checkpoint_encoder_and_run_json(two_epoch_run):
    model_dir, summary = two_epoch_run
    assert summary["epochs_done"] == 2 and summary["num_examples"] == 32
    assert summary["skipped_files"] == 2
    assert len(summary["history"]["loss"]) == 2
    assert all(math.isfinite(x) for x in summary["history"]["loss"])
    for key in ("loss", "loss_transformed", "loss_image", "learning_rate"):
        assert key in summary["final"]
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-2")
    with open(os.path.join(model_dir, "run.json")) as f:
        assert json.load(f)["epochs_done"] == 2
    with open(os.path.join(model_dir, "config.json")) as f:  # the data used, not the TFDS default
        recorded = json.load(f)
    assert recorded["data_dir"] and recorded["dataset"] is None
    encoder = keras.models.load_model(os.path.join(model_dir, "encoder.keras"))
    assert encoder.input_shape == (None, 32, 32, 3)
    assert encoder(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 576)  # no heads
    assert os.listdir(os.path.join(model_dir, "logs", "train"))  # TensorBoard events


def test_encoder_statistics_are_reestimated_and_the_weights_kept(two_epoch_run, image_folder):
    """The encoder written is the trained backbone with its batch-norm statistics re-estimated on
    centre crops of the training images (recorded in run.json); its weights are the trained
    ones, and the checkpoint keeps the statistics of training."""
    model_dir, summary = two_epoch_run
    assert summary["encoder_bn_statistics"] == {"source": "training images, centre crops",
                                                "images": 32}
    written = keras.models.load_model(os.path.join(model_dir, "encoder.keras"))
    model, _, _ = training.open_run(cfg(model_dir, image_folder), 32, 4,
                                    tf.distribute.get_strategy())
    trained = backbones.build_encoder(model.backbone, 32)
    for a, b in zip(trained.trainable_weights, written.trainable_weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    moving = [(a.numpy(), b.numpy()) for a, b in zip(batchnorm.moving_statistics(trained),
                                                     batchnorm.moving_statistics(written))]
    assert moving and not all(np.allclose(a, b) for a, b in moving)


def test_rerun_resumes_at_epoch_two_with_the_bank_restored(two_epoch_run, image_folder):
    model_dir, first = two_epoch_run
    config = cfg(model_dir, image_folder, epochs=3)
    strategy = tf.distribute.get_strategy()
    model, epoch, manager = training.open_run(config, 32, 4, strategy)
    assert int(epoch.numpy()) == 2
    saved = tf.train.load_variable(manager.latest_checkpoint,
                                   "memory_bank/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(model.bank.rows.numpy(), saved)
    fresh = training.build_pirl(config, 32)
    training.build_variables(fresh, config)
    assert not np.allclose(fresh.bank.rows.numpy(), model.bank.rows.numpy())

    summary = training.train(config)
    assert summary["resumed_from_epoch"] == 2 and summary["epochs_done"] == 3
    # run.json keeps the loss terms of every epoch, across invocations.
    assert summary["history"]["loss"][:2] == first["history"]["loss"]
    assert len(summary["history"]["loss"]) == 3


def test_other_configuration_is_refused_and_nothing_is_overwritten(two_epoch_run, image_folder):
    model_dir, _ = two_epoch_run
    before = open(os.path.join(model_dir, "config.json")).read()
    with pytest.raises(UsageError, match="another configuration.*num_negatives"):
        training.train(cfg(model_dir, image_folder, num_negatives=7))
    assert open(os.path.join(model_dir, "config.json")).read() == before


def test_run_made_before_a_field_existed_still_resumes(two_epoch_run, image_folder):
    """A config.json written before a flag was added (here: view_min_scale) is read with that
    flag's default, so the run resumes instead of being refused as another configuration."""
    model_dir, _ = two_epoch_run
    path = os.path.join(model_dir, "config.json")
    stored = json.load(open(path))
    del stored["view_min_scale"]
    with open(path, "w") as f:
        json.dump(stored, f)
    run_folder.prepare(cfg(model_dir, image_folder), 32)  # no error
    stored["dataset"] = "stl10"  # recorded beside --data_dir before the data used was recorded
    with open(path, "w") as f:
        json.dump(stored, f)
    run_folder.prepare(cfg(model_dir, image_folder), 32)  # no error
    with pytest.raises(UsageError, match="another configuration.*view_min_scale"):
        run_folder.prepare(cfg(model_dir, image_folder, view_min_scale=0.3), 32)


def test_foreign_non_empty_model_dir_is_refused(tmp_path, image_folder):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not empty"):
        training.train(cfg(tmp_path, image_folder))
    assert sorted(os.listdir(tmp_path)) == ["precious.txt"]


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_error_and_saves_nothing(tmp_path, image_folder):
    with pytest.raises(FloatingPointError, match="lower --learning_rate"):
        training.train(cfg(tmp_path / "run", image_folder, learning_rate=1e35, epochs=1))
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")) is None


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO)


def test_cli_bad_flags_give_one_line(tmp_path):
    result = _cli("--backbone=resnet18", f"--model_dir={tmp_path}/r")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: unknown --backbone='resnet18'; valid values:")
    assert "mobilenetv3small" in last
    result = _cli("--backbone=resnet50", "--width=0.5", f"--model_dir={tmp_path}/r")
    assert "no width multiplier" in result.stderr.strip().splitlines()[-1]
    result = _cli(f"--data_dir={tmp_path}/missing", f"--model_dir={tmp_path}/r")
    assert (result.stderr.strip().splitlines()[-1]
            == f"error: --data_dir={tmp_path}/missing is not a directory")
    assert not os.path.exists(tmp_path / "r")


def test_cli_without_network_tfds_gives_one_line(tmp_path, monkeypatch):
    # No network, whatever the machine has: every HTTP(S) request goes to a closed local port.
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    result = _cli("--dataset=stl10", f"--tfds_data_dir={tmp_path}", f"--model_dir={tmp_path}/r")
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: TFDS 'stl10' is not prepared in ")
    assert "the network cannot be reached" in last and "--data_dir" in last
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["bfloat16", "float16"])
def test_mixed_precision_keeps_bank_and_loss_float32_and_writes_a_float32_encoder(
        policy, tmp_path, image_folder):
    summary = training.train(cfg(tmp_path / "run", image_folder, epochs=1, steps_per_epoch=2,
                                 mixed_precision=policy))
    assert all(math.isfinite(x) for x in summary["history"]["loss"])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after training
    encoder = keras.models.load_model(os.path.join(tmp_path, "run", "encoder.keras"))
    policies = {layer.dtype_policy.name for layer in encoder._flatten_layers()}
    assert policies == {"float32"}
    assert encoder(np.zeros((1, 32, 32, 3), np.float32)).dtype == "float32"
    with training.precision_policy(policy):
        model = training.build_pirl(cfg(tmp_path / "x", image_folder,
                                        mixed_precision=policy), 32)
        training.build_variables(model, cfg(tmp_path / "x", image_folder))
        z_image, _ = model(pipeline.synthetic_batch(2, 32))
    assert model.bank.rows.dtype == "float32" and z_image.dtype == "float32"
    assert (policy == "float16") == isinstance(model.optimizer,
                                               keras.optimizers.LossScaleOptimizer)


@pytest.mark.slow
def test_the_defaults_validate_and_train(tmp_path, image_folder):
    """Only what a folder and a small machine need is set; every recipe field is the default."""
    from mobile_pirl_tf.core import config

    defaults = config.TrainConfig(backbone="mobilenetv3small", image_size=32, batch_size=8,
                                  epochs=1, steps_per_epoch=2, data_dir=image_folder,
                                  model_dir=str(tmp_path / "run"), verbose=0)
    assert (defaults.loss, defaults.shared_negatives, defaults.photometric) == (
        "infonce", True, config.TrainConfig().photometric)
    summary = training.train(defaults.validate())
    assert summary["epochs_done"] == 1 and math.isfinite(summary["final"]["loss"])
    with open(os.path.join(tmp_path, "run", "config.json")) as f:
        assert json.load(f)["recipe"] == "default"
