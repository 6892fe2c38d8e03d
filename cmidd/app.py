"""What ``launch.py`` calls: run the configured task, and leave a trace of any failure."""
import traceback
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig


def run(cfg: DictConfig, out_dir: Path):
    """Run ``cfg.task`` with its output in ``out_dir``. A failure writes ``error.txt`` (the
    traceback) into the run directory before it propagates, so a failed sweep job says why."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return instantiate(cfg.task)(cfg, out_dir)
    except BaseException as error:
        (out_dir / "error.txt").write_text("".join(traceback.format_exception(error)))
        raise
