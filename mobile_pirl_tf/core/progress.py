"""Progress of a long step (feature extraction, a probe, QAT, latency timing): what it is
doing, n of N and the time left; a bar redrawn in place on a terminal, otherwise a log line at
most every `interval` seconds (and one at the end). Free of TensorFlow."""

import logging
import sys
import time


def duration(seconds):
    """1h05m, 3m07s, 42s."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    def __init__(self, what, total, interval=30.0, stream=None):
        self.what, self.total, self.interval = what, max(int(total), 1), interval
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done, self.started, self.last = 0, time.time(), 0.0

    def text(self):
        elapsed = time.time() - self.started
        left = elapsed / self.done * (self.total - self.done) if self.done else None
        tail = f", {duration(left)} left" if left is not None and self.done < self.total \
            else f", {duration(elapsed)}"
        return f"{self.what}: {self.done}/{self.total}{tail}"

    def update(self, n=1):
        self.done = min(self.total, self.done + n)
        now = time.time()
        if self.tty:
            width = 24
            filled = int(width * self.done / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.text()}  ")
            self.stream.flush()
        elif now - self.last >= self.interval or self.done == self.total:
            logging.info("%s", self.text())
            self.last = now

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def wrap(self, iterable):
        """Yields the items of `iterable`, counting one step per item."""
        for item in iterable:
            yield item
            self.update()
