"""What ``launch.py`` calls: run the configured task, and leave a trace of any failure."""

import logging
import os
import sys
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from . import overrides
from .checkpoint import Preempted
from .errors import UserError

log = logging.getLogger(__name__)


def run(cfg: DictConfig, out_dir: Path):
    """Run ``cfg.task`` with its output in ``out_dir``. A failure writes ``error.txt`` into the
    run directory (the message of a ``UserError``, else the traceback), so a failed sweep job
    says why. A ``UserError`` is reported as one ``error:`` line (``CMIDD_DEBUG=1`` keeps the
    traceback): a single run then ends with status 2; a sweep job logs the line and the sweep
    goes on (``SweepErrors`` ends the sweep with status 2)."""
    if cfg.get("resume"):
        out_dir = Path(cfg.resume)
        if not (out_dir / "checkpoint.pt").is_file():
            _fail_in_one_line(UserError(f"resume={out_dir} has no checkpoint.pt"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "error.txt").unlink(missing_ok=True)  # from an earlier try of this run
    try:
        cfg = overrides.for_run(cfg, out_dir, resume=bool(cfg.get("resume")))
        return instantiate(cfg.task)(cfg, out_dir)
    except Preempted as stop:
        if _multirun():
            raise
        print(f"preempted: {stop}", file=sys.stderr)
        raise SystemExit(3) from None
    except BaseException as error:
        one_line = isinstance(error, UserError) and not _debug()
        text = f"error: {error}\n" if one_line else "".join(traceback.format_exception(error))
        (out_dir / "error.txt").write_text(text)
        if not one_line:
            raise
        if _multirun():
            log.error("error: %s", error)
            return None
        _fail_in_one_line(error)


def _fail_in_one_line(error: UserError):
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2) from None


def _debug() -> bool:
    return os.environ.get("CMIDD_DEBUG", "") not in ("", "0")


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class SweepErrors(Callback):
    """At the end of a sweep, the jobs that stopped on a ``UserError`` (one line each, from their
    ``error.txt``), and exit status 2 if there were any: the sweep itself went on past them."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        failed = sorted(sweep.rglob("error.txt")) if sweep.is_dir() else []
        lines = [(p.parent.relative_to(sweep), p.read_text().strip().splitlines()) for p in failed]
        lines = [(job, text[-1]) for job, text in lines if text and text[-1].startswith("error:")]
        for job, line in lines:
            print(f"{job}: {line}", file=sys.stderr)
        if lines:
            print(f"error: {len(lines)} job(s) of the sweep failed (above)", file=sys.stderr)
            raise SystemExit(2)
