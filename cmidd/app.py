"""What ``launch.py`` calls: run the configured task, and leave a trace of any failure."""
import os
import sys
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from .checkpoint import Preempted
from .errors import UserError


def run(cfg: DictConfig, out_dir: Path):
    """Run ``cfg.task`` with its output in ``out_dir``. A failure writes ``error.txt`` (the
    traceback) into the run directory before it propagates, so a failed sweep job says why.
    In a single run, a ``UserError`` ends the process with status 2 and one ``error:`` line
    (``CMIDD_DEBUG=1`` keeps the traceback); in a sweep it fails only its own job."""
    if cfg.get("resume"):
        out_dir = Path(cfg.resume)
        if not (out_dir / "checkpoint.pt").is_file():
            _fail_in_one_line(UserError(f"resume={out_dir} has no checkpoint.pt"))
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return instantiate(cfg.task)(cfg, out_dir)
    except Preempted as stop:
        if _multirun():
            raise
        print(f"preempted: {stop}", file=sys.stderr)
        raise SystemExit(3) from None
    except BaseException as error:
        (out_dir / "error.txt").write_text("".join(traceback.format_exception(error)))
        if isinstance(error, UserError) and not _debug() and not _multirun():
            _fail_in_one_line(error)
        raise


def _fail_in_one_line(error: UserError):
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2) from None


def _debug() -> bool:
    return os.environ.get("CMIDD_DEBUG", "") not in ("", "0")


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
