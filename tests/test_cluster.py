"""--strategy=multi_worker proven on one machine: two train.py processes on 127.0.0.1 (ports
chosen free at run time), one CPU device each, against one process with the same global batch
on two devices; a killed worker; --strategy=tpu where no TPU exists; the step under XLA.

Every process and wait here is bounded in time (TIMEOUT), and every loop in count."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, tiny

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.data import pipeline, sources
from mobile_pirl_tf.training import cluster
from mobile_pirl_tf.training import fit as training

TIMEOUT = 300  # seconds any one worker process may take
SETTINGS = dict(backbone="mobilenetv3small", image_size=32, batch_size=8, num_negatives=16,
                steps_per_epoch=1, bn_recalibration_images=16, verbose=0)
ARGS = [f"--{name}={value}" for name, value in SETTINGS.items()]
CHIEF_FILES = {"config.json", "checkpoints", "logs", "encoder.keras", "history.json",
               "run.json", "run.lock"}


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(model_dir, data_dir, epochs, tmp_root, extra=()):
    """Two train.py workers of one cluster; their temporary folders go under tmp_root."""
    ports = free_ports(2)
    workers = []
    for index in range(2):
        spec = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(spec), "TMPDIR": str(tmp_root)}
        workers.append(subprocess.Popen(
            [sys.executable, "train.py", "--strategy=multi_worker", f"--data_dir={data_dir}",
             f"--model_dir={model_dir}", f"--epochs={epochs}", *ARGS, *extra],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return workers


def finish(workers, timeout=TIMEOUT):
    """(return code, stderr) of each worker; a worker past the timeout is killed."""
    deadline, out = time.monotonic() + timeout, []
    for w in workers:
        try:
            _, err = w.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.kill()
            _, err = w.communicate()
            err += "\n[killed by the test: past its timeout]"
        out.append((w.returncode, err))
    return out


def worker_folders(tmp_root):
    return [name for name in os.listdir(tmp_root) if name.startswith(cluster.WORKER_PREFIX)]


def checkpoint_tensors(path):
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(path)
            if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")}


@pytest.mark.slow
def test_two_workers_a_killed_one_a_resume_and_one_process_on_two_devices_agree(
        tmp_path, image_folder, monkeypatch):
    """One two-worker run checks it all: killing worker 1 after the first checkpoint stops
    worker 0 with one line; rerunning both resumes from the chief's last checkpoint and writes
    only the chief's files; the resumed run equals one process running the same global batch
    on two devices (per-replica batch-norm statistics, as on two workers)."""
    model_dir, tmp_root = tmp_path / "run", tmp_path / "worker-tmp"
    tmp_root.mkdir()
    schedule = ["--schedule_epochs=1000"]  # one schedule, whatever --epochs each call asks
    workers = start_workers(model_dir, image_folder, 1000, tmp_root, schedule)
    first = model_dir / "checkpoints" / "ckpt-1.index"
    deadline = time.monotonic() + TIMEOUT
    while not first.exists() and time.monotonic() < deadline:
        assert all(w.poll() is None for w in workers), finish(workers, 10)
        time.sleep(0.5)
    assert first.exists(), finish(workers, 1)
    os.kill(workers[1].pid, signal.SIGKILL)
    started = time.monotonic()
    (code, err), _ = finish(workers, timeout=120)
    took = time.monotonic() - started
    assert code not in (0, None) and took < 120, (code, took, err[-2000:])
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "a worker of the cluster stopped" in errors[0], err[-2000:]
    assert "rerun the same command on every worker" in errors[0]
    print(f"the surviving worker stopped {took:.1f} s after the kill")

    done = int(tf.train.latest_checkpoint(str(model_dir / "checkpoints")).rsplit("-", 1)[1])
    results = finish(start_workers(model_dir, image_folder, done + 1, tmp_root, schedule))
    assert [c for c, _ in results] == [0, 0], results
    run = json.load(open(model_dir / "run.json"))
    assert run["resumed_from_epoch"] == done and run["epochs_done"] == done + 1
    assert run["replicas"] == 2
    # Only the chief's files; the killed worker's temporary folder is removed by the next
    # worker on the machine, the other's by itself.
    assert set(os.listdir(model_dir)) == CHIEF_FILES and worker_folders(tmp_root) == []

    monkeypatch.setattr(cluster, "make_strategy", lambda name, tpu="":
                        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    reference = tmp_path / "reference"
    training.train(training.TrainConfig(data_dir=image_folder, model_dir=str(reference),
                                        epochs=done + 1, schedule_epochs=1000, **SETTINGS))
    ours = checkpoint_tensors(str(model_dir / "checkpoints" / f"ckpt-{done + 1}"))
    theirs = checkpoint_tensors(str(reference / "checkpoints" / f"ckpt-{done + 1}"))
    assert ours.keys() == theirs.keys() and len(ours) > 100
    for name in ours:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-4, atol=1e-5,
                                   err_msg=name)
    assert "memory_bank/.ATTRIBUTES/VARIABLE_VALUE" in ours


def test_multi_worker_without_a_cluster_spec_is_one_line(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UsageError, match="needs TF_CONFIG"):
        cluster.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UsageError, match="TF_CONFIG is not a cluster spec"):
        cluster.make_strategy("multi_worker")


def test_tpu_strategy_without_a_tpu_is_one_line():
    port = free_ports(1)[0]  # nothing listens there
    with pytest.raises(UsageError, match=f"no TPU found at --tpu=grpc://127.0.0.1:{port}"):
        cluster.make_strategy("tpu", f"grpc://127.0.0.1:{port}")
    with pytest.raises(UsageError, match="no TPU found at this machine"):
        cluster.make_strategy("tpu")  # not a TPU VM: the environment names no TPU


def test_each_shard_builds_its_slice_of_every_global_batch(image_folder):
    """Two input pipelines together give exactly the single pipeline's global batches."""


    source = sources.make_source(None, image_folder, None)
    whole = list(pipeline.pretraining_dataset(source, 32, 8, 2, seed=3, last_epoch=2)
                 .as_numpy_iterator())
    shards = [list(pipeline.pretraining_dataset(source, 32, 8, 2, seed=3, last_epoch=2,
                                                shard=i, num_shards=2).as_numpy_iterator())
              for i in range(2)]
    assert len(whole) == len(shards[0]) == len(shards[1]) == 4
    for batch, first, second in zip(whole, *shards):
        np.testing.assert_array_equal(batch["index"],
                                      np.concatenate([first["index"], second["index"]]))
        np.testing.assert_array_equal(batch["image"],
                                      np.concatenate([first["image"], second["image"]]))


@pytest.mark.slow
def test_the_step_compiles_under_xla_with_the_default_paths_loss():
    """What a TPU needs of the step: static shapes and XLA-compilable ops. The jit-compiled
    step gives the loss and the bank of the default path."""
    config = tiny(batch_size=4, num_negatives=8, embedding_dim=8)
    batch = pipeline.synthetic_batch(4, 32, 16, names=config.transform_names())
    results = []
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        model = training.build_pirl(config, 16)
        training.build_variables(model, config)
        step = tf.function(model.train_step, jit_compile=jit)
        out = step(batch)
        results.append((float(out["loss"]), model.bank.rows.numpy().copy()))
    (loss, bank), (xla_loss, xla_bank) = results
    assert np.isfinite(loss)
    np.testing.assert_allclose(xla_loss, loss, rtol=1e-4)
    np.testing.assert_allclose(xla_bank, bank, atol=1e-5)


def test_steps_per_execution_reaches_the_compiled_step_and_may_change_on_resume():
    config = tiny(batch_size=4, num_negatives=8, steps_per_execution=5)
    assert training.build_pirl(config, 16).steps_per_execution == 5
    assert {"strategy", "tpu", "steps_per_execution"} <= set(training.TrainConfig.RESUMABLE)
