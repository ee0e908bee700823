"""JSON records on disk (config.json, run.json, history.json, the study's scores and costs):
written atomically, so a process killed mid-write leaves the previous file, never half of one.
Free of TensorFlow."""

import json
import os


def write_json(path, obj):
    """Writes obj to path through a temporary file and an atomic rename."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def read_json(path, default=None):
    """The JSON at path, or `default` when there is no such file."""
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)
