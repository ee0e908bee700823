"""Records on disk (config.json, run.json, history.json, reports, the study's scores, CSV and
Markdown files): written atomically, so a process killed mid-write leaves the previous file,
never half of one. Free of TensorFlow.

    with atomic_write(path) as f:       # a temporary file in the same folder, then fsync, rename
        f.write(text)
    with atomic_path(path) as tmp:      # the same, for a library that writes the file itself
        model.save(tmp)
    write_json(path, obj)               # the same, for JSON
    read_json(path, default)            # default when the file does not exist
"""

import contextlib
import json
import os
import tempfile

TMP_SUFFIX = ".tmp"  # temporary files end so; a run folder's leftovers are found by it


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp gives 0o600)


class DamagedRecord(ValueError):
    """A record file exists but cannot be read (truncated, empty, not JSON)."""

    def __init__(self, path, reason):
        super().__init__(f"{path} is damaged ({reason})")
        self.path, self.reason = path, reason


@contextlib.contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """Yields a file object writing to a temporary file beside `path`; on a clean exit the file
    is fsynced and renamed over `path` (atomic on POSIX); on an error it is removed and `path`
    is left as it was."""
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as f:
        yield f


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`, with the same extension, for a library that
    writes files itself (`model.save`, `np.save`); on a clean exit the file is fsynced and
    renamed over `path`; on an error it is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=TMP_SUFFIX + ext, dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_json(path, obj):
    """Writes obj to path as indented JSON, atomically (`atomic_write`)."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def write_text(path, text):
    """Writes text to path atomically (`atomic_write`)."""
    with atomic_write(path) as f:
        f.write(text)


def read_json(path, default=None):
    """The JSON at path, or `default` when there is no such file.

    Raises:
      DamagedRecord: the file exists but is empty, truncated or not JSON.
    """
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return default
    except UnicodeDecodeError:
        raise DamagedRecord(path, "not text") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise DamagedRecord(path, "empty" if not text.strip() else f"not JSON: {e}") from None


def set_aside(path):
    """Renames a damaged record to <path>.damaged (replacing an older one) so the tool can
    redo what it held; returns the new name."""
    target = path + ".damaged"
    os.replace(path, target)
    return target
