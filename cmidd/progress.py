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
    counts wall-clock time since then, except what ``exclude`` takes out (work between steps
    that is not per step, e.g. evaluations); the time left adds the ``extra`` seconds that such
    work still needs, so that it is what a user waits for."""

    def __init__(
        self, total: int, done: int = 0, unit: str = "it", every: float = 0.0, clock=time.monotonic
    ):
        self.total, self.first, self.unit, self.every, self.clock = total, done, unit, every, clock
        self.start = self.last = clock()
        self.excluded = 0.0

    def exclude(self, seconds: float) -> None:
        self.excluded += seconds

    def status(self, done: int, extra: float = 0.0) -> str:
        """``12/600, 1.3 it/s, 7m 32s left`` (no rate before the first step is done)."""
        elapsed = self.clock() - self.start - self.excluded
        steps = done - self.first
        if steps <= 0 or elapsed <= 0:
            return f"{done}/{self.total}"
        rate = steps / elapsed
        shown = f"{rate:.3g} {self.unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}"
        left = (self.total - done) / rate + extra
        return f"{done}/{self.total}, {shown}, {duration(left)} left"

    def log(self, logger: logging.Logger, done: int, message: str, *args, extra: float = 0.0):
        """Log ``message`` with the status appended, at most once per ``every`` seconds (the last
        step is always logged)."""
        now = self.clock()
        if done < self.total and now - self.last < self.every:
            return
        self.last = now
        logger.info(f"{message} ({self.status(done, extra)})", *args)


def epoch_logger(logger: logging.Logger, label: str, epochs: int, every: float = 30.0):
    """An ``on_epoch(epoch)`` hook for network training that logs progress every ``every``
    seconds (a proxy or an evaluation network can train for minutes)."""
    progress = Progress(epochs, unit="epoch", every=every)
    return lambda epoch: progress.log(logger, epoch + 1, "%s: epoch %d", label, epoch + 1)
