"""Every command of README.md runs as written, in order, on tiny data: `$DATA` is a small
Imagenette-shaped folder (train/ and val/, as the official archive), lengths are cut (one
epoch, 32 px, a few seconds of supervised baseline, 20 fine-tuning steps, one QAT epoch of 64
images, two timed invokes), nothing else changes. The headline's STL-10 comes from
`tfds.testing.mock_data` (its download is what test_data.py fakes). Lines that are not Python
(the data download, `export`) are shown to the reader, not run here; the test command itself
is not run from inside the tests."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")

# Runs a tool under TFDS's mock data (the download is replaced; see test_data.py for a real
# prepare from a faked archive): python -c RUNNER script.py --flags...
RUNNER = """
import runpy, sys
from mobile_pirl_tf.core import cli

real_run = cli.run


def run(main, doc):  # the tool's main under TFDS's mock data, inside the tool's own output rules
    def mocked(argv):
        import tensorflow_datasets as tfds
        from mobile_pirl_tf.data import sources
        sources.network_reachable = lambda: True  # mock_data replaces the download itself
        with tfds.testing.mock_data(num_examples=80, policy=tfds.testing.MockPolicy.USE_CODE):
            return main(argv)
    return real_run(mocked, doc)


cli.run = run
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

LENGTHS = [(r"--epochs=\d+", "--epochs=1"), (r"--image_size=\d+", "--image_size=32"),
           (r"--supervised_minutes=[\d.]+", "--supervised_minutes=0.05")]


def readme_commands(text):
    """The Python commands of the README's bash blocks, continuations joined, comments cut."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line.startswith("python "):
                commands.append(" ".join(line.split()))
    return commands


def tiny(command, data):
    """The command with the data folders and lengths substituted."""
    command = command.replace("$DATA", data)
    for pattern, value in LENGTHS:
        command = re.sub(pattern, value, command)
    if command.startswith("python train.py"):  # the headline gives no length: cut it too
        for flag in ("--epochs=1", "--image_size=32"):
            if flag.split("=")[0] + "=" not in command:
                command += f" {flag}"
    if "--protocol=finetune" in command:
        command += " --finetune_steps=20"
    if command.startswith("python export/to_tflite.py"):
        command += " --qat_epochs=1 --qat_images=64 --latency_runs=2"
    return command


def write_imagenette(root, per_class=160, test_per_class=10):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", test_per_class)):
        for c, name in enumerate(("n01440764", "n02102040")):
            folder = os.path.join(root, split, name)
            os.makedirs(folder)
            for i in range(n):
                image = rng.normal(70, 25, (40, 40, 3))
                image[..., c] += 90
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                    os.path.join(folder, f"{i}.JPEG"), "JPEG")


def test_the_readme_lists_the_commands_this_test_runs():
    commands = readme_commands(open(README).read())
    assert commands[:3] == ["python train.py --backbone=efficientnetb0", "python -m pytest -q",
                            next(c for c in commands if "--model_dir=runs/first" in c)]
    assert any(c.startswith("python -m mobile_pirl_tf.study") for c in commands)
    assert tiny("python train.py --backbone=x --data_dir=$DATA/a --epochs=14", "/d") == (
        "python train.py --backbone=x --data_dir=/d/a --epochs=1 --image_size=32")


@pytest.mark.slow
def test_every_readme_command_runs_as_written_on_tiny_data(tmp_path):
    data = str(tmp_path / "data")
    write_imagenette(os.path.join(data, "imagenette"))
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": REPO}
    for command in readme_commands(open(README).read()):
        if command.startswith("python -m pytest"):
            continue  # the tests themselves
        args = tiny(command, data).split()[1:]
        if "stl10" in command or "--data_dir" not in command and args[0] == "train.py":
            args = ["-c", RUNNER] + args
        if args[0].endswith(".py"):
            args[0] = os.path.join(REPO, args[0])
        elif args[:2] == ["-c", RUNNER]:
            args[2] = os.path.join(REPO, args[2])
        started = time.monotonic()
        result = subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True,
                                text=True, timeout=900)
        print(f"{time.monotonic() - started:6.1f} s  {command}")
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, command
        # The tools' own lines only: no framework start-up lines, no absl prefix
        # ("I1204 20:45:38.821004 1402 data.py:146]"), no leaked Keras warning.
        output = result.stdout + result.stderr
        for framework in ("I0000", "E0000", "W0000", "absl::InitializeLog", "cuda", "oneDNN",
                          "retracing", "functional_saver", "shuffle"):
            assert framework not in output, (command, framework)
        assert re.search(r"^[IWE]\d{4} \d\d:\d\d", output, re.M) is None, (command, output)
    assert os.path.exists(work / "runs" / "first" / "export" / "int8.tflite")
    assert os.path.exists(work / "runs" / "first" / "eval_finetune.json")
    assert os.path.exists(work / "runs" / "pirl" / "encoder.keras")  # the headline's run
    final = json.load(open(work / "runs" / "first" / "run.json"))["final"]
    assert "loss_image" in final and "nce_log_z" not in final  # InfoNCE: no NCE normaliser
