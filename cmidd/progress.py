"""Progress of long loops (distillation, network training, evaluation) for the log: rate and
time left, in plain log lines so that Hydra's job logs and sweeps keep them."""

import logging
import time


def duration(seconds: float) -> str:
    """``1h 02m``, ``3m 05s`` or ``42s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """``total`` steps of which ``done`` are done before timing starts (a resumed run). The rate
    counts wall-clock time since then, everything included (e.g. evaluations between
    iterations), so that the time left is what a user waits for."""

    def __init__(
        self, total: int, done: int = 0, unit: str = "it", every: float = 0.0, clock=time.monotonic
    ):
        self.total, self.first, self.unit, self.every, self.clock = total, done, unit, every, clock
        self.start = self.last = clock()

    def status(self, done: int) -> str:
        """``12/600, 1.3 it/s, 7m 32s left`` (no rate before the first step is done)."""
        elapsed = self.clock() - self.start
        steps = done - self.first
        if steps <= 0 or elapsed <= 0:
            return f"{done}/{self.total}"
        rate = steps / elapsed
        shown = f"{rate:.3g} {self.unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}"
        return f"{done}/{self.total}, {shown}, {duration((self.total - done) / rate)} left"

    def log(self, logger: logging.Logger, done: int, message: str, *args) -> None:
        """Log ``message`` with the status appended, at most once per ``every`` seconds (the last
        step is always logged)."""
        now = self.clock()
        if done < self.total and now - self.last < self.every:
            return
        self.last = now
        logger.info(f"{message} ({self.status(done)})", *args)


def epoch_logger(logger: logging.Logger, label: str, epochs: int, every: float = 30.0):
    """An ``on_epoch(epoch)`` hook for network training that logs progress every ``every``
    seconds (a proxy or an evaluation network can train for minutes)."""
    progress = Progress(epochs, unit="epoch", every=every)
    return lambda epoch: progress.log(logger, epoch + 1, "%s: epoch %d", label, epoch + 1)
