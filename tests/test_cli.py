"""The command-line layer: flags generated from the configuration dataclasses, --help that lists
each tool's own flags and exits 0, one-line errors, no TensorFlow import before main, and the
project's lint configuration."""

import dataclasses
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

from mobile_pirl_tf.core import config, eval_config, export_config
from mobile_pirl_tf.core.errors import UsageError

# Runs a script as `python SCRIPT ARGS` would, then reports whether TensorFlow was imported.
PROBE = """
import runpy, sys
sys.argv = [sys.argv[1]] + sys.argv[2:]
code = 0
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code
print("tensorflow imported:", "tensorflow" in sys.modules, file=sys.stderr)
sys.exit(code)
"""


def _probe(script, *args):
    return subprocess.run([sys.executable, "-c", PROBE, os.path.join(REPO, script), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize("script,flags", [
    ("train.py", ["--backbone", "--learning_rate", "--transforms", "--model_dir"]),
    ("evaluate.py", ["--protocol", "--baseline", "--supervised_minutes"]),
    ("export/to_tflite.py", ["--variants", "--qat_epochs", "--recalibrate_bn_images"]),
])
def test_help_lists_the_tools_own_flags_and_exits_0(script, flags):
    result = _probe(script, "--help")
    assert result.returncode == 0, result.stderr
    for flag in flags:
        assert f"  {flag}  (default: " in result.stdout
    assert "--tf_" not in result.stdout and "--test_srcdir" not in result.stdout  # not absl's
    assert "tensorflow imported: False" in result.stderr


def test_bad_flag_value_is_one_line_without_importing_tensorflow():
    result = _probe("train.py", "--backbone=vgg16")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: unknown --backbone='vgg16'")
    assert lines[-1] == "tensorflow imported: False"


def test_help_groups_training_flags():
    result = _probe("train.py", "--help")
    out = result.stdout
    assert out.index("Data:") < out.index("  --data_dir") < out.index("Model:")
    assert out.index("Memory bank and loss:") < out.index("  --num_negatives")


def test_every_config_field_has_help():
    for cls in (config.TrainConfig, eval_config.EvalConfig, export_config.ExportConfig):
        for field in dataclasses.fields(cls):
            assert field.metadata.get("help"), f"{cls.__name__}.{field.name} has no help"
        grouped = {n for names in cls.HELP_GROUPS.values() for n in names}
        assert grouped == {f.name for f in dataclasses.fields(cls)}, cls.__name__


def test_export_config_takes_the_runs_settings_unless_given():
    run = {"backbone": "mobilenetv2", "width": 0.5, "data_dir": "/images", "dataset": "stl10"}
    cfg = export_config.ExportConfig(model_dir="r").with_run_defaults(run)
    assert (cfg.backbone, cfg.width, cfg.data_dir) == ("mobilenetv2", 0.5, "/images")
    own = export_config.ExportConfig(model_dir="r", backbone="mnasnet_a1", dataset="cifar10")
    own = own.with_run_defaults(run)
    assert (own.backbone, own.data_dir, own.dataset) == ("mnasnet_a1", None, "cifar10")
    with pytest.raises(UsageError, match="unknown --variants value 'int4'"):
        export_config.ExportConfig(model_dir="r", variants=("int4",)).validate()
    with pytest.raises(UsageError, match="--model_dir"):
        export_config.ExportConfig().validate()


@pytest.mark.skipif(shutil.which("ruff") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "ruff")),
    reason="ruff is not installed (requirements.txt installs it)")
def test_the_tree_is_lint_clean():
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    result = subprocess.run([ruff, "check", "."], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]


def test_recipe_paper_sets_the_papers_values_and_explicit_flags_win():
    code = ("from absl import flags; from mobile_pirl_tf.core import cli, config; "
            "cli.define_flags(config.TrainConfig); "
            "flags.FLAGS(['x', '--recipe=paper', '--temperature=0.1']); "
            "c = cli.config_from_flags(config.TrainConfig).validate(); "
            "print(c.recipe, c.loss, c.temperature, c.num_negatives, c.shared_negatives, "
            "c.learning_rate, c.batch_size)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.stdout.split() == ["paper", "nce", "0.1", "32000", "False", "0.03", "256"]
    assert config.TrainConfig.from_recipe("paper").photometric == "vissl"
    assert config.TrainConfig().photometric == "one_of"
    paper = config.TrainConfig.from_recipe("paper")
    assert (paper.loss, paper.temperature, paper.num_negatives, paper.shared_negatives) == (
        "nce", 0.07, 32000, False)
    default = config.TrainConfig().validate()
    assert (default.loss, default.temperature, default.shared_negatives) == (
        "infonce", 0.2, True)
    with pytest.raises(UsageError, match="--recipe"):
        config.TrainConfig.from_recipe("simclr")


def test_framework_output_is_dropped_unless_verbose(tmp_path):
    """TensorFlow is imported (the error comes after the data is read), yet stderr holds only
    the tool's one line; MOBILE_PIRL_VERBOSE=1 brings the framework's start-up lines back."""
    args = [sys.executable, os.path.join(REPO, "train.py"), f"--data_dir={tmp_path}",
            "--backbone=mobilenetv3small", f"--model_dir={tmp_path / 'run'}"]
    quiet = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert quiet.returncode == 2
    assert quiet.stderr.strip().splitlines() == [
        f"error: --data_dir={tmp_path} holds no image TensorFlow can read (.jpg, .jpeg, .png, "
        ".bmp, .gif, .webp); no other file"], quiet.stderr
    loud = subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "MOBILE_PIRL_VERBOSE": "1",
                               "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert loud.returncode == 2 and len(loud.stderr.strip().splitlines()) > 1


def test_progress_is_a_bar_on_a_terminal_and_bounded_lines_in_a_log(caplog):
    import io
    import logging

    from mobile_pirl_tf.core.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    with Progress("features", 4, stream=screen) as progress:
        list(progress.wrap(range(4)))
    assert screen.getvalue().count("\r") == 4 and "features: 4/4" in screen.getvalue()
    caplog.set_level(logging.INFO)
    log = io.StringIO()
    with Progress("probe", 1000, interval=3600, stream=log) as progress:
        for _ in range(1000):
            progress.update()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("probe")]
    assert len(lines) == 2 and lines[0].startswith("probe: 1/1000, ")  # first, then the last
    assert lines[-1].startswith("probe: 1000/1000") and log.getvalue() == ""


def test_in_a_log_training_prints_a_line_at_most_every_30_s_inside_an_epoch(caplog):
    import logging

    from mobile_pirl_tf.training import callbacks

    clock = [0.0]
    callbacks.time.time, real = (lambda: clock[0]), callbacks.time.time
    caplog.set_level(logging.INFO)
    try:
        progress = callbacks.LogProgress(epochs=2, steps_per_epoch=100, interval=30)
        progress.on_epoch_begin(0)
        for step in range(100):
            clock[0] += 1.0  # a second a step: 100 s in the epoch
            progress.on_train_batch_end(step, {"loss": 8.0 - step / 100})
        progress.on_epoch_end(0, {"loss": 7.0, "loss_image": 7.5})
    finally:
        callbacks.time.time = real
    lines = [r.getMessage() for r in caplog.records]
    inside = [line for line in lines if "left in the epoch" in line]
    assert len(inside) == 3  # at 30, 60 and 90 s
    assert inside[0].startswith("epoch 1/2: step 30/100, loss 7.7") and "1m10s left" in inside[0]
    assert lines[-1].startswith("epoch 1/2 done in 1m40s: loss 7, loss_image 7.5")
