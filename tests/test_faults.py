"""Fault injection: every file the tools wrote is damaged (truncated, emptied or filled with
garbage) and the tool is run again; it must recover (a cache recomputed, a record set aside as
<name>.damaged and redone, an older checkpoint resumed) or stop with one line, never a
traceback, never a rerun that fails the same way. The files come from real runs of train.py
and evaluate.py, so a record added to a tool is damaged here too (and fails the test until it
is given a category below). Odd inputs and unusable folders are here as well."""

import errno
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import tiny

from mobile_pirl_tf.core import records
from mobile_pirl_tf.core.config import TrainConfig
from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.training import fit

pytestmark = pytest.mark.slow  # real runs, damaged and rerun: the full suite, not the quick lane
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What a rerun does with each file train.py or evaluate.py writes, when it is damaged
# (patterns are relative to the run folder).
REFUSED = {"config.json"}                       # one line naming the file and what it means
SET_ASIDE = {"history.json", "run.json", "checkpoints/ckpt-2.index",
             "checkpoints/ckpt-2.data-00000-of-00001",
             "baselines/random/baseline.json"}  # <name>.damaged kept, redone
REWRITTEN = {"encoder.keras", "checkpoints/checkpoint", "eval_linear.json",
             "baselines/random/encoder.keras", "baselines/random/eval_linear.json"}
CACHES = ("features/", "baselines/random/features/", "logs/")  # recomputed or not read
OLDER = {"checkpoints/ckpt-1.index",            # read only when the newer one is damaged
         "checkpoints/ckpt-1.data-00000-of-00001"}
NOT_RECORDS = {"run.lock"}                      # the lock holds no content anyone reads
DAMAGES = (lambda b: b[:len(b) // 2], lambda b: b"", lambda b: b"\x00garbage\xff" * 7)


def config(model_dir, data_dir, **fields):
    return tiny(model_dir, data_dir, **{**dict(epochs=2), **fields})


def evaluate(model_dir, data_dir):
    return subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"),
                           f"--model_dir={model_dir}", f"--data_dir={data_dir}",
                           "--protocol=linear"], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def written(tmp_path_factory, image_folder, labelled_folder):
    """A train.py run of two epochs and its evaluation: the folder and every file in it."""
    run = tmp_path_factory.mktemp("faults") / "run"
    fit.train(config(run, image_folder))
    result = evaluate(run, labelled_folder)
    assert result.returncode == 0, result.stderr[-2000:]
    files = sorted(os.path.relpath(p, run) for p in glob.glob(f"{run}/**", recursive=True)
                   if os.path.isfile(p))
    return run, files


def damage(path, how):
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(DAMAGES[how % len(DAMAGES)](content))


def copy_of(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def test_every_file_the_tools_write_has_a_recovery(written):
    run, files = written
    known = REFUSED | SET_ASIDE | REWRITTEN | OLDER | NOT_RECORDS
    unknown = [f for f in files if f not in known and not f.startswith(CACHES)]
    assert not unknown, f"give these files a category in test_faults.py: {unknown}"


def test_a_damaged_config_is_one_line_naming_it(written, tmp_path, image_folder):
    run = copy_of(written[0], tmp_path)
    damage(run / "config.json", 0)
    with pytest.raises(UsageError) as e:
        fit.train(config(run, image_folder))
    message = str(e.value)
    assert "\n" not in message and "config.json" in message and "delete" in message


def test_damaged_train_records_and_checkpoints_are_recovered(written, tmp_path, image_folder,
                                                             caplog):
    run = copy_of(written[0], tmp_path)
    targets = [f for f in written[1] if f in SET_ASIDE | REWRITTEN and
               not f.startswith(("baselines/", "eval_"))]
    for i, name in enumerate(targets):
        damage(run / name, i)
    summary = fit.train(config(run, image_folder))
    assert summary["epochs_done"] == 2 and summary["resumed_from_epoch"] == 1  # ckpt-1 resumed
    for name in SET_ASIDE & set(targets):
        assert os.path.exists(run / f"{name}.damaged"), name
    assert "checkpoint" in caplog.text and "damaged" in caplog.text
    assert records.read_json(run / "run.json")["epochs_done"] == 2  # rewritten, readable
    from mobile_pirl_tf.models import backbones

    backbones.load_encoder(str(run))  # the encoder was written again


def test_when_every_checkpoint_is_damaged_training_starts_again_with_a_warning(
        written, tmp_path, image_folder, caplog):
    run = copy_of(written[0], tmp_path)
    for i, name in enumerate(sorted(SET_ASIDE | OLDER)):
        if name.startswith("checkpoints/"):
            damage(run / name, i)
    summary = fit.train(config(run, image_folder))
    assert summary["resumed_from_epoch"] == 0 and summary["epochs_done"] == 2
    assert "no readable checkpoint is left" in caplog.text


def test_damaged_evaluation_files_are_recomputed(written, tmp_path, labelled_folder):
    run = copy_of(written[0], tmp_path)
    names = [f for f in written[1] if f.startswith(("features/", "baselines/"))
             or f.startswith("eval_")]
    assert any(f.endswith(".npy") for f in names)
    for i, name in enumerate(names):
        damage(run / name, i)
    result = evaluate(run, labelled_folder)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert os.path.exists(run / "baselines" / "random" / "baseline.json.damaged")
    assert "is damaged" in result.stderr


def test_damaged_study_caches_are_rebuilt(tmp_path):
    from mobile_pirl_tf.study.costs import Costs
    from mobile_pirl_tf.study.trials import TrialLog

    db = tmp_path / "study.db"
    TrialLog(f"sqlite:///{db}")
    damage(db, 2)
    log = TrialLog(f"sqlite:///{db}")  # set aside, a new one made
    assert os.path.exists(f"{db}.damaged") and log.study.get_trials() == []
    costs_path = tmp_path / "costs.json"
    costs_path.write_text('{"x": ')
    costs = Costs(str(costs_path), TrainConfig(), 10, 100)
    assert costs.table == {} and os.path.exists(f"{costs_path}.damaged")


# --- odd inputs and unusable folders ---------------------------------------------------------

def test_images_only_pillow_reads_are_skipped_and_named_and_every_epoch_is_full(tmp_path):
    from conftest import write_image_folder
    from PIL import Image

    folder = tmp_path / "imgs"
    write_image_folder(str(folder), num_images=8)
    Image.new("RGB", (20, 20)).convert("1").save(folder / "mono1.bmp")
    frames = [Image.new("RGB", (20, 20), c) for c in ("red", "blue")]
    frames[0].save(folder / "anim.webp", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "tiff.jpg", "TIFF")
    summary = fit.train(config(tmp_path / "run", str(folder), batch_size=4, epochs=3,
                               steps_per_epoch=None))
    assert summary["skipped_files"] == 5  # the three above, broken.jpg, notes.txt
    assert len(summary["history"]["loss"]) == 3  # every epoch ran (8 images: 2 steps each)


def test_one_image_is_one_line_and_leaves_nothing_behind(tmp_path):
    from PIL import Image

    folder = tmp_path / "one"
    folder.mkdir()
    Image.new("RGB", (20, 20), "red").save(folder / "a.png")
    with pytest.raises(UsageError, match="at least 2 training images"):
        fit.train(config(tmp_path / "run", str(folder), batch_size=1))
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("case", ["file", "under_a_file", "read_only"])
def test_an_unusable_model_dir_is_one_line(case, tmp_path, image_folder, monkeypatch):
    (tmp_path / "afile").write_text("x")
    model_dir = {"file": tmp_path / "afile", "under_a_file": tmp_path / "afile" / "run",
                 "read_only": tmp_path / "ro"}[case]
    if case == "read_only":  # root ignores permission bits: the file system says read-only
        real = os.makedirs

        def makedirs(path, *args, **kwargs):
            if str(path).startswith(str(model_dir)):
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real(path, *args, **kwargs)
        monkeypatch.setattr(os, "makedirs", makedirs)
    with pytest.raises(UsageError) as e:
        fit.train(config(model_dir, image_folder))
    expected = {"file": "is a file", "under_a_file": "which is a file",
                "read_only": "read-only"}[case]
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_evaluate_with_an_output_dir_writes_nothing_in_the_model_folder(written, tmp_path,
                                                                       labelled_folder):
    run = copy_of(written[0], tmp_path)
    shutil.rmtree(run / "features")
    before = sorted(glob.glob(f"{run}/**", recursive=True))
    out = tmp_path / "elsewhere"
    result = subprocess.run([sys.executable, os.path.join(REPO, "evaluate.py"),
                             f"--model_dir={run}", f"--data_dir={labelled_folder}",
                             "--protocol=knn", f"--output_dir={out}"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(glob.glob(f"{run}/**", recursive=True)) == before
    assert os.path.exists(out / "eval_knn.json") and glob.glob(f"{out}/features/*.npy")


def test_a_rerun_asking_fewer_epochs_records_the_epochs_done(written, tmp_path, image_folder):
    run = copy_of(written[0], tmp_path)
    summary = fit.train(config(run, image_folder, epochs=1))
    assert summary["epochs_done"] == 2 and summary["config"]["epochs"] == 2
    assert np.isfinite(summary["final"]["loss"])
