"""What ``launch.py`` calls: run the configured task, and leave a trace of any failure."""
import os
import sys
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from .errors import UserError


def run(cfg: DictConfig, out_dir: Path):
    """Run ``cfg.task`` with its output in ``out_dir``. A failure writes ``error.txt`` (the
    traceback) into the run directory before it propagates, so a failed sweep job says why.
    In a single run, a ``UserError`` ends the process with status 2 and one ``error:`` line
    (``CMIDD_DEBUG=1`` keeps the traceback); in a sweep it fails only its own job."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return instantiate(cfg.task)(cfg, out_dir)
    except BaseException as error:
        (out_dir / "error.txt").write_text("".join(traceback.format_exception(error)))
        if isinstance(error, UserError) and not _debug() and not _multirun():
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        raise


def _debug() -> bool:
    return os.environ.get("CMIDD_DEBUG", "") not in ("", "0")


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
