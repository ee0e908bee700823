"""Where training runs: the `tf.distribute` strategy of `--strategy`, and who writes the run.

    default       one device (`tf.distribute.get_strategy()`)
    mirrored      every GPU of one machine (`MirroredStrategy`)
    multi_worker  several machines (`MultiWorkerMirroredStrategy`), the cluster read from
                  TF_CONFIG, the standard TensorFlow cluster spec, e.g. on the second of two:
                  {"cluster": {"worker": ["host1:12345", "host2:12345"]},
                   "task": {"type": "worker", "index": 1}}
                  Every machine runs the same train.py command; --model_dir must be one folder
                  all of them see (NFS, GCS). The chief (task "chief", else worker 0) alone
                  writes it; the others write to a temporary folder they remove (the pattern
                  Keras documents for multi-worker checkpoints and TensorBoard).
    tpu           a Cloud TPU (`TPUStrategy`) at --tpu (a name or grpc:// address; empty: the
                  environment's resolver, as on a TPU VM)

Every strategy gets its input from `distribute(strategy, dataset_fn, batch_size)`: each input
pipeline (one per worker or TPU host) builds only its share of every global batch, at the
per-replica batch size, so a worker decodes only its images and the global batch is the one a
single process would see (`pipeline.pretraining_dataset`).

A worker that dies or becomes unreachable is noticed by the strategy's health check (every
`HEALTH_CHECK_SECONDS`), which aborts the collectives of the others; `train.py` then stops with
one line (`ClusterError`) and the same commands, rerun, resume from the last checkpoint.
"""

import contextlib
import glob
import json
import os
import shutil
import socket
import tempfile

import tensorflow as tf

from mobile_pirl_tf.core.errors import UsageError

# How often a multi-worker process checks that its peers are alive, and how long it waits at
# the start for all of them to join (a worker given a wrong address fails instead of hanging).
HEALTH_CHECK_SECONDS = 5
CLUSTER_WAIT_SECONDS = 600
TPU_CONNECT_SECONDS = 10


# Strategies with one input pipeline per host, whose variables the deployable encoder must not
# share (it is rebuilt outside the strategy).
PER_HOST_INPUT = (tf.distribute.MultiWorkerMirroredStrategy, tf.distribute.TPUStrategy)
WORKER_PREFIX = "mobile-pirl-worker-"


class ClusterError(UsageError):
    """A worker of the cluster stopped or could not be reached."""


def make_strategy(name, tpu=""):
    """The tf.distribute strategy named by --strategy. For multi_worker this must run before
    TensorFlow executes anything in the process (it configures the collective ops)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return _multi_worker()
    if name == "tpu":
        return _tpu(tpu)
    return tf.distribute.get_strategy()


def _multi_worker():
    spec = os.environ.get("TF_CONFIG")
    if not spec:
        raise UsageError("--strategy=multi_worker needs TF_CONFIG, the cluster spec, e.g. "
                         "'{\"cluster\": {\"worker\": [\"host1:12345\", \"host2:12345\"]}, "
                         "\"task\": {\"type\": \"worker\", \"index\": 0}}' (BUILD.md)")
    try:
        cluster = json.loads(spec)
        cluster["cluster"], cluster["task"]["type"], cluster["task"]["index"]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"TF_CONFIG is not a cluster spec ({e}); it needs \"cluster\" and "
                         "\"task\": {\"type\", \"index\"} (BUILD.md)") from None
    # The health check's settings are class attributes of TensorFlow's implementation (no
    # public argument): check peers every few seconds, and give up waiting for the cluster
    # after CLUSTER_WAIT_SECONDS instead of never.
    from tensorflow.python.distribute import collective_all_reduce_strategy as collective

    collective.CollectiveAllReduceExtended._check_health_interval = HEALTH_CHECK_SECONDS
    collective.CollectiveAllReduceExtended._check_health_initial_timeout = CLUSTER_WAIT_SECONDS
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as e:
        raise ClusterError(f"the cluster of TF_CONFIG did not come up: {first_line(e)}; start "
                           "train.py on every worker of TF_CONFIG within "
                           f"{CLUSTER_WAIT_SECONDS} s") from None


def _tpu(address):
    if address.startswith("grpc://"):  # TensorFlow waits forever on an address nobody serves
        host, _, port = address[len("grpc://"):].rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=TPU_CONNECT_SECONDS).close()
        except (OSError, ValueError) as e:
            raise UsageError(f"no TPU found at --tpu={address}: cannot connect ({e})") from None
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        where = f"--tpu={address}" if address else "this machine (no --tpu given)"
        raise UsageError(f"no TPU found at {where}: {first_line(e)}") from None
    return tf.distribute.TPUStrategy(resolver)


def first_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def is_chief(strategy):
    """True unless this process is a non-chief worker of a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type in (None, "worker") and task_id == 0 and not has_chief


@contextlib.contextmanager
def worker_dir():
    """The temporary folder (removed on leaving) a non-chief worker writes to: it takes part in
    every save, but nobody keeps its files; the chief writes --model_dir."""
    _remove_dead_workers_folders()
    folder = tempfile.mkdtemp(prefix=f"{WORKER_PREFIX}{os.getpid()}-")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_dead_workers_folders():
    """The temporary folders of workers of this machine that were killed (a SIGKILL leaves no
    chance to clean up), recognised by their process id."""
    for folder in glob.glob(os.path.join(tempfile.gettempdir(), f"{WORKER_PREFIX}*-*")):
        pid = os.path.basename(folder)[len(WORKER_PREFIX):].split("-")[0]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, PermissionError):  # not ours, or another user's live process
            pass


def distribute(strategy, dataset_fn, batch_size):
    """A distributed dataset from dataset_fn(shard, num_shards, replica_batch): one input
    pipeline per worker (or TPU host) building its shard of each global batch."""
    def per_pipeline(context):
        return dataset_fn(context.input_pipeline_id, context.num_input_pipelines,
                          context.get_per_replica_batch_size(batch_size))
    if isinstance(strategy, PER_HOST_INPUT):
        return strategy.distribute_datasets_from_function(per_pipeline)
    return dataset_fn(0, 1, batch_size)  # one pipeline: Keras splits the global batch


def end_collectives(strategy):
    """Stops the peer health check once the last collective has run, so a worker that ends
    first is not reported as lost by the others."""
    stop = getattr(strategy.extended, "_stop_check_health_thread", None)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and stop:
        stop()


LOST_WORKER_ERRORS = (tf.errors.UnavailableError, tf.errors.CancelledError,
                      tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                      tf.errors.InternalError)


@contextlib.contextmanager
def lost_workers_reported(strategy, model_dir):
    """Turns the error a collective raises when a peer is gone into one ClusterError line."""
    try:
        yield
    except LOST_WORKER_ERRORS as e:
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            raise
        raise ClusterError(
            f"a worker of the cluster stopped or became unreachable ({first_line(e)}); the "
            f"last finished epoch's checkpoint in {model_dir} is intact: rerun the same "
            "command on every worker to resume") from None
