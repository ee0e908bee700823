"""Time an exported .tflite model on an Android phone with LiteRT's `benchmark_model`, via adb.

    python export/benchmark_phone.py --model=runs/pirl/export/int8.tflite \\
        --benchmark_binary=PATH/android_aarch64_benchmark_model [--num_threads=4] [--use_gpu] \\
        [--use_xnnpack] [--serial=DEVICE] [--output=FILE.json]

Pushes the binary and the model to /data/local/tmp, runs

    adb shell /data/local/tmp/benchmark_model --graph=/data/local/tmp/MODEL --num_threads=N
        --use_gpu=true|false --use_xnnpack=true|false --num_runs=R --warmup_runs=W

parses its "Inference timings in us" line and writes the timings (ms), the device model and
ABI and the exact command as JSON (default: MODEL.<device>.json beside the model).

`benchmark_model` for Android arm64 is a prebuilt of the LiteRT (TensorFlow Lite) releases
("android_aarch64_benchmark_model"; see BUILD.md); it cannot be downloaded from here.
Without adb on PATH, or without a connected device, the script says which in one line.
"""

import os
import re
import shutil
import subprocess
import sys

from absl import app, flags

from mobile_pirl_tf.core.records import write_json

flags.DEFINE_string("model", None, "The .tflite file to time.")
flags.DEFINE_string("benchmark_binary", os.environ.get("LITERT_BENCHMARK_MODEL"),
                    "benchmark_model built for the phone (default: $LITERT_BENCHMARK_MODEL).")
flags.DEFINE_integer("num_threads", 4, "CPU threads.")
flags.DEFINE_bool("use_gpu", False, "Run on the GPU delegate.")
flags.DEFINE_bool("use_xnnpack", True, "Use the XNNPACK CPU delegate.")
flags.DEFINE_integer("num_runs", 50, "Timed runs.")
flags.DEFINE_integer("warmup_runs", 5, "Warm-up runs.")
flags.DEFINE_string("serial", None, "Device serial (adb -s) when several are connected.")
flags.DEFINE_string("adb", "adb", "adb executable.")
flags.DEFINE_string("output", None, "JSON file to write (default: beside the model).")
FLAGS = flags.FLAGS

REMOTE_DIR = "/data/local/tmp"
TIMINGS = re.compile(r"Inference timings in us:\s*(.*)")


class PhoneError(RuntimeError):
    """A one-line, actionable problem (no adb, no device, no binary, no timings)."""


def adb_command(adb, serial, *args):
    return [adb] + (["-s", serial] if serial else []) + list(args)


def connected_devices(adb):
    out = subprocess.run([adb, "devices"], capture_output=True, text=True, check=True).stdout
    return [line.split("\t")[0] for line in out.splitlines()[1:]
            if line.strip().endswith("\tdevice")]


def benchmark_args(remote_model, num_threads, use_gpu, use_xnnpack, num_runs, warmup_runs):
    return [f"{REMOTE_DIR}/benchmark_model", f"--graph={remote_model}",
            f"--num_threads={num_threads}", f"--use_gpu={str(use_gpu).lower()}",
            f"--use_xnnpack={str(use_xnnpack).lower()}", f"--num_runs={num_runs}",
            f"--warmup_runs={warmup_runs}"]


def parse_timings(output):
    """{'init_ms', 'first_inference_ms', 'warmup_avg_ms', 'inference_avg_ms'} from the
    'Inference timings in us: Init: ..., First inference: ..., Warmup (avg): ...,
    Inference (avg): ...' line of benchmark_model."""
    match = TIMINGS.search(output)
    if not match:
        raise PhoneError("benchmark_model printed no 'Inference timings' line; its output ends: "
                         + " ".join(output.strip().splitlines()[-3:])[-300:])
    names = {"Init": "init_ms", "First inference": "first_inference_ms",
             "Warmup (avg)": "warmup_avg_ms", "Inference (avg)": "inference_avg_ms"}
    timings = {}
    for part in match.group(1).split(","):
        key, _, value = part.partition(":")
        if key.strip() in names and value.strip():
            timings[names[key.strip()]] = float(value) / 1000.0
    return timings


def benchmark(model, binary, num_threads=4, use_gpu=False, use_xnnpack=True, num_runs=50,
              warmup_runs=5, serial=None, adb="adb"):
    """Runs the benchmark on the phone and returns the result dict (see module docstring)."""
    if not os.path.isfile(model):
        raise PhoneError(f"--model={model}: no such file; export one with export/to_tflite.py")
    adb_path = shutil.which(adb)
    if adb_path is None:
        raise PhoneError(f"adb not found ({adb!r} is not on PATH); install Android platform-tools "
                         "and put adb on PATH, or pass --adb=PATH")
    devices = connected_devices(adb_path)
    if not devices:
        raise PhoneError("no Android device connected ('adb devices' lists none); connect a phone "
                         "with USB debugging enabled and accept the prompt")
    if serial is None and len(devices) > 1:
        raise PhoneError(f"{len(devices)} devices connected ({', '.join(devices)}); pick one "
                         "with --serial")
    serial = serial or devices[0]
    if serial not in devices:
        raise PhoneError(f"--serial={serial} is not connected; connected: {', '.join(devices)}")
    if not binary or not os.path.isfile(binary):
        raise PhoneError("pass --benchmark_binary=PATH to LiteRT's android_aarch64_benchmark_model "
                         "(or set $LITERT_BENCHMARK_MODEL); see BUILD.md")

    def run(*args):
        proc = subprocess.run(adb_command(adb_path, serial, *args), capture_output=True, text=True)
        if proc.returncode != 0:
            raise PhoneError(f"'adb {' '.join(args)}' failed: "
                             f"{(proc.stderr or proc.stdout).strip()[-300:]}")
        return proc.stdout

    remote_model = f"{REMOTE_DIR}/{os.path.basename(model)}"
    run("push", binary, f"{REMOTE_DIR}/benchmark_model")
    run("shell", "chmod", "+x", f"{REMOTE_DIR}/benchmark_model")
    run("push", model, remote_model)
    command = benchmark_args(remote_model, num_threads, use_gpu, use_xnnpack, num_runs,
                             warmup_runs)
    output = run("shell", *command)
    return {
        "model": os.path.abspath(model),
        "device": run("shell", "getprop", "ro.product.model").strip(),
        "abi": run("shell", "getprop", "ro.product.cpu.abi").strip(), "serial": serial,
        "num_threads": num_threads, "use_gpu": use_gpu, "use_xnnpack": use_xnnpack,
        "num_runs": num_runs, "warmup_runs": warmup_runs, "command": " ".join(command),
        **parse_timings(output),
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.model:
        print("error: pass --model=FILE.tflite", file=sys.stderr)
        sys.exit(2)
    try:
        result = benchmark(FLAGS.model, FLAGS.benchmark_binary, FLAGS.num_threads, FLAGS.use_gpu,
                           FLAGS.use_xnnpack, FLAGS.num_runs, FLAGS.warmup_runs, FLAGS.serial,
                           FLAGS.adb)
    except PhoneError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    device = re.sub(r"[^A-Za-z0-9_.-]+", "_", result["device"]) or "device"
    output = FLAGS.output or f"{os.path.splitext(FLAGS.model)[0]}.{device}.json"
    write_json(output, result)
    print(f"{result['device']}: {result['inference_avg_ms']:.2f} ms per inference "
          f"({FLAGS.num_threads} threads, gpu={FLAGS.use_gpu}) -> {output}")


if __name__ == "__main__":
    app.run(main)
