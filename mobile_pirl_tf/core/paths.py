"""Output folders the tools write to: every way one can be unusable is one line naming it,
found before anything is written (free of TensorFlow)."""

import errno
import os
import tempfile

from mobile_pirl_tf.core.errors import UsageError


def writable_dir(path, flag):
    """Checks that `path` is (or can be made) a folder this process can write to; creates it.

    Args:
      path: the folder.
      flag: the flag that named it ("--model_dir"), for the message.

    Returns:
      True when the folder was created here (it did not exist).

    Raises:
      UsageError: `path` is a file, lies under a file, cannot be created, is read-only or not
        writable for this user, or its device is full.
    """
    where = f"{flag}={path}"
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{where} is a file, not a folder; name a folder")
    parent = os.path.abspath(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{where} lies under {parent}, which is a file; name a folder elsewhere")
    created = not os.path.exists(path)
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"{where} cannot be written: {_why(e)}") from None
    return created


def _why(error):
    if error.errno in (errno.EROFS,):
        return "the file system is read-only; name a folder elsewhere"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "no permission for this user; name a folder you own"
    if error.errno == errno.ENOSPC:
        return "no space left on its device; free some or name another"
    return f"{error.strerror or error}; name another folder"
