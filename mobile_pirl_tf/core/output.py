"""What the tools print: their own lines, not the frameworks' (free of TensorFlow).

`framework_quiet()` drops what C++ writes to file descriptor 2 (TensorFlow's start-up banners,
the CUDA probe of a machine without a GPU, the LiteRT converter's notes) while Python's own
stderr still reaches the terminal; `own_or_serious` keeps this project's log records and
anyone's warnings and errors. `MOBILE_PIRL_VERBOSE=1` keeps everything.
"""

import contextlib
import logging
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VERBOSE_ENV = "MOBILE_PIRL_VERBOSE"


def verbose():
    """Whether the framework's own logs are wanted (MOBILE_PIRL_VERBOSE=1)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def _python_stream_handlers():
    from absl import logging as absl_logging

    handlers = list(logging.getLogger().handlers)
    handlers.append(absl_logging.get_absl_handler().python_handler)
    return [h for h in handlers if isinstance(h, logging.StreamHandler)]


@contextlib.contextmanager
def framework_quiet():
    """Inside the block, what is written to file descriptor 2 from C++ (TensorFlow's start-up
    banners, the CUDA probe of a machine without a GPU, the LiteRT converter's notes) is
    dropped, while Python's sys.stderr (our log lines, errors, tracebacks) still reaches the
    terminal. MOBILE_PIRL_VERBOSE=1 keeps everything."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    python_stderr = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
    handlers = [h for h in _python_stream_handlers() if h.stream is python_stderr]
    for handler in handlers:
        handler.setStream(sys.stderr)
    try:
        yield
    finally:
        sys.stderr.flush()
        for handler in handlers:
            handler.setStream(python_stderr)
        replaced, sys.stderr = sys.stderr, python_stderr
        replaced.close()
        os.dup2(saved, 2)
        os.close(saved)


class ToolFormatter(logging.Formatter):
    """A tool's log lines as the user reads them: the message alone for information, "LEVEL
    message" for warnings and errors (no timestamp, thread or source file)."""

    def format(self, record):
        message = record.getMessage()
        return message if record.levelno < logging.WARNING else \
            f"{record.levelname} {message}"


def own_or_serious(record):
    """This project's log records (any level) and anyone's errors: the frameworks' warnings
    (deprecations, retracing, TFDS notes) are theirs, not the user's (MOBILE_PIRL_VERBOSE=1
    shows them)."""
    return record.levelno >= logging.ERROR or os.path.abspath(record.pathname).startswith(REPO)
