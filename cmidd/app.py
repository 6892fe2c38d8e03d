"""What ``launch.py`` calls: run the configured task, and leave a trace of any failure."""

import errno
import logging
import os
import shlex
import socket
import sys
from pathlib import Path
from traceback import format_exception

from filelock import FileLock, Timeout
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from . import distributed, overrides
from .checkpoint import Preempted
from .errors import UserError

log = logging.getLogger(__name__)


def run(cfg: DictConfig, out_dir: Path):
    """Run ``cfg.task`` with its output in ``out_dir``, which the run holds (``hold``). A
    failure writes ``error.txt`` into the run directory (the message of a ``UserError``, else the
    traceback), so a failed sweep job says why. A ``UserError`` is reported as one ``error:``
    line (``CMIDD_DEBUG=1`` keeps the traceback): a single run then ends with status 2; a sweep
    job logs the line and the sweep goes on (``SweepErrors`` ends the sweep with status 2).
    Ctrl-C ends a run with one line and status 130 (in the loop, after a checkpoint)."""
    if cfg.get("resume"):
        out_dir = Path(cfg.resume)
        if not any((d / "checkpoint.pt").is_file() for d in (out_dir, out_dir / "base")):
            return _stop(UserError(f"resume={out_dir} has no checkpoint.pt"))
    try:
        release = hold(out_dir)
    except UserError as error:  # nothing is written into a directory that is not this run's
        return _stop(error)
    try:
        return _run(cfg, out_dir)
    finally:
        release()


def hold(out_dir: Path):
    """Create ``out_dir`` if need be and lock it for this run: a second run into it (two runs
    started in the same second, a resumed run still going) stops in one line naming the holder.
    Under torchrun the main process holds it for all. Returns what releases it."""
    lock, holder = FileLock(out_dir / ".lock"), out_dir / ".holder"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not distributed.is_main():
            return lambda: None
        lock.acquire(timeout=0)
        holder.write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
    except Timeout:
        who = holder.read_text().strip() if holder.is_file() else "another process"
        raise UserError(
            f"run directory {out_dir} is in use by another run ({who}): wait for it to "
            "end, or give this one another directory (hydra.run.dir=...)"
        ) from None
    except OSError as error:
        if error.errno in (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP):  # no locks there
            log.warning("run directory %s cannot be locked (%s): not held", out_dir, error)
            return lambda: None
        raise UserError(f"run directory {out_dir} cannot be written: {error}") from None

    def release():
        holder.unlink(missing_ok=True)
        lock.release()

    return release


def _run(cfg: DictConfig, out_dir: Path):
    (out_dir / "error.txt").unlink(missing_ok=True)  # from an earlier try of this run
    try:
        cfg = overrides.for_run(cfg, out_dir, resume=bool(cfg.get("resume")))
        return instantiate(cfg.task)(cfg, out_dir)
    except Preempted as stop:
        if multirun() and not stop.interrupted:
            raise
        how = "interrupted" if stop.interrupted else "preempted"
        again = overrides.pasteable("resume", out_dir.resolve())
        print(f"{how}: {stop}: resume with python launch.py {again}", file=sys.stderr)
        raise SystemExit(130 if stop.interrupted else 3) from None
    except KeyboardInterrupt:
        _record(out_dir, "interrupted: stopped by Ctrl-C\n")
        print("interrupted: stopped by Ctrl-C", file=sys.stderr)
        raise SystemExit(130) from None
    except BaseException as error:
        one_line = isinstance(error, UserError) and not _debug()
        _record(out_dir, f"error: {error}\n" if one_line else "".join(format_exception(error)))
        if not one_line:
            raise
        return _stop(error)


def _record(out_dir: Path, text: str) -> None:
    """``error.txt``, if the disk lets (a full disk is often why the run stopped)."""
    try:
        (out_dir / "error.txt").write_text(text)
    except OSError as error:
        log.error("%s could not be written: %s", out_dir / "error.txt", error)


def _stop(error: UserError):
    """A sweep job logs the line and the sweep goes on; a single run ends with status 2."""
    if multirun():
        log.error("error: %s", error)
        return None
    _fail_in_one_line(error)


def _fail_in_one_line(error: UserError):
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2) from None


def _debug() -> bool:
    return os.environ.get("CMIDD_DEBUG", "") not in ("", "0")


def multirun() -> bool:
    """Whether this process runs the jobs of a sweep (``-m``, ``sweep=...``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class SweepErrors(Callback):
    """At the end of a sweep: where its results are and the command that reports them; the jobs
    that stopped on a ``UserError`` (one line each, from their ``error.txt``), and exit status 2
    if there were any: the sweep itself went on past them."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir).resolve()
        print(f"sweep results in {sweep}", file=sys.stderr)
        print(f"report: python -m cmidd.report {shlex.quote(str(sweep))}", file=sys.stderr)
        failed = sorted(sweep.rglob("error.txt")) if sweep.is_dir() else []
        lines = [(p.parent.relative_to(sweep), p.read_text().strip().splitlines()) for p in failed]
        lines = [(job, text[-1]) for job, text in lines if text and text[-1].startswith("error:")]
        for job, line in lines:
            print(f"{job}: {line}", file=sys.stderr)
        if lines:
            print(f"error: {len(lines)} job(s) of the sweep failed (above)", file=sys.stderr)
            raise SystemExit(2)
