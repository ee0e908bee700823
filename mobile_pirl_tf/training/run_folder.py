"""The run folder (`--model_dir`) of a PIRL run: who may work in it, what configuration it
holds, and what an unfinished write left behind.

    run_lock(model_dir)            one train.py process per folder (an flock on run.lock)
    prepare(config, num_examples)  config.json written, or compared with the one there
    remove_leftovers(model_dir)    temporary files of a write a killed process did not finish

A folder holding a run with another configuration, or unrelated files, is refused in one line
and left as it was.
"""

import contextlib
import dataclasses
import fcntl
import glob
import logging
import os
import shutil
import socket

from mobile_pirl_tf.core.config import TrainConfig
from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.core.paths import writable_dir
from mobile_pirl_tf.core.records import TMP_SUFFIX, DamagedRecord, read_json, write_json

LOCK_NAME = "run.lock"
CONFIG_NAME = "config.json"


class RunInUse(UsageError):
    """Another process holds the run folder's lock."""


def _foreign(model_dir):
    """Whether model_dir holds files but no Mobile-PIRL run."""
    return (os.path.isdir(model_dir) and set(os.listdir(model_dir)) - {LOCK_NAME}
            and not os.path.exists(os.path.join(model_dir, CONFIG_NAME)))


def _refuse_foreign(model_dir):
    if _foreign(model_dir):
        raise UsageError(f"--model_dir={model_dir} is not empty and holds no Mobile-PIRL run "
                         f"(no {CONFIG_NAME}); use a new or empty folder")


@contextlib.contextmanager
def run_lock(model_dir):
    """Holds model_dir/run.lock for one process: a second train.py on the folder is refused in
    one line naming the holder. An flock, so a killed holder never leaves it stuck. An unusable
    folder (a file, under a file, read-only, ...) is one line; a folder this call created is
    removed again when the run fails before its first checkpoint (a refused run leaves
    nothing behind)."""
    _refuse_foreign(model_dir)
    created = writable_dir(model_dir, "--model_dir")
    handle = open(os.path.join(model_dir, LOCK_NAME), "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunInUse(f"--model_dir={model_dir} is in use by {holder}; wait for it to end "
                       "or use another --model_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"train.py process {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    try:
        yield
    except BaseException:
        if created and not glob.glob(os.path.join(model_dir, "checkpoints", "*.index")):
            shutil.rmtree(model_dir, ignore_errors=True)
        raise
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def remove_leftovers(model_dir):
    """Temporary files of a write that an earlier process did not finish (a kill, a full disk)."""
    patterns = ("*.tmp*", f".*{TMP_SUFFIX}*", os.path.join("checkpoints", "*_temp*"))
    for pattern in patterns:
        for path in glob.glob(os.path.join(model_dir, pattern)):
            logging.info("removing %s, left by an unfinished write", path)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _data_used(config_dict):
    """The configuration with the data that was used: a --data_dir overrides --dataset, so the
    TFDS name is not kept beside it (older runs recorded it; they compare the same)."""
    if config_dict.get("data_dir"):
        return {**config_dict, "dataset": None}
    return config_dict


def recorded(config):
    """The configuration as config.json records it."""
    return _data_used(dataclasses.asdict(config))


def _comparable(config_dict):
    return {k: v for k, v in _data_used(config_dict).items() if k not in TrainConfig.RESUMABLE}


def prepare(config, num_examples):
    """Creates model_dir with config.json, or checks that its run has this configuration.

    Returns:
      {"from": old, "to": new} when the learning rate changes on resume ({} otherwise);
      config.json takes the new one once an epoch has trained with it (`record_lr_change`).

    Raises:
      UsageError: the folder holds a run with another configuration, or unrelated files.
    """
    path = os.path.join(config.model_dir, CONFIG_NAME)
    wanted = {**recorded(config), "num_examples": num_examples}
    try:
        stored = read_json(path)
    except DamagedRecord as e:
        raise UsageError(f"{e}: it holds the run's settings, so this rerun cannot check them "
                         f"against its flags; delete {path} to resume with the flags given (the "
                         "checkpoints must match them) or use a new --model_dir") from None
    if stored is not None:
        # A field added after that run was made takes its default (the run used it).
        stored = {**dataclasses.asdict(TrainConfig()), **stored}
        old, new = _comparable(stored), _comparable(wanted)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            shown = ", ".join(f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in diff[:4])
            raise UsageError(f"--model_dir={config.model_dir} holds a run with another "
                             f"configuration ({shown}); use a new --model_dir")
        if stored["learning_rate"] != config.learning_rate:
            return {"from": stored["learning_rate"], "to": config.learning_rate}
        return {}
    _refuse_foreign(config.model_dir)
    write_json(path, wanted)
    return {}


def record_lr_change(model_dir, learning_rate):
    """config.json takes the learning rate a resumed run trained with."""
    path = os.path.join(model_dir, CONFIG_NAME)
    write_json(path, {**read_json(path), "learning_rate": learning_rate})
