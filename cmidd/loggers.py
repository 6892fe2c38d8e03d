"""Experiment loggers. A logger failure never fails the run: it is reported once and logging
stops, while results are still written to the run directory."""
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


class NullLogger:
    """``logger=none``: logs nothing."""

    run_id = None

    def __init__(self, **_):
        pass

    def log(self, metrics: dict, step: int) -> None:
        pass

    def image(self, key: str, path: Path, step: int) -> None:
        pass

    def summary(self, values: dict) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def _wandb_mode(mode: str) -> str:
    """``auto``: WANDB_MODE if set, online if W&B credentials are configured, else offline."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    return "online" if netrc.is_file() and "api.wandb.ai" in netrc.read_text() else "offline"


class WandbLogger(NullLogger):
    """Weights & Biases, offline unless the user has configured W&B for online use."""

    def __init__(self, config: dict, out_dir: Path, project: str = "cmidd", entity: str = None,
                 mode: str = "auto", group: str = None, tags: list = (), name: str = None):
        self.run = None
        try:
            import wandb

            self.wandb = wandb
            self.run = wandb.init(project=project, entity=entity, mode=_wandb_mode(mode), group=group,
                                  tags=list(tags), name=name, config=config, dir=str(out_dir),
                                  settings=wandb.Settings(console="off"))
            self.run_id = self.run.id
        except Exception as error:  # noqa: BLE001 -- logging must never fail the run
            self._disable(error)

    def _disable(self, error: Exception) -> None:
        log.warning("W&B logging disabled: %s: %s", type(error).__name__, error)
        self.run = None

    def _safely(self, action) -> None:
        if self.run is None:
            return
        try:
            action()
        except Exception as error:  # noqa: BLE001
            self._disable(error)

    def log(self, metrics: dict, step: int) -> None:
        self._safely(lambda: self.run.log(metrics, step=step))

    def image(self, key: str, path: Path, step: int) -> None:
        self._safely(lambda: self.run.log({key: self.wandb.Image(str(path))}, step=step))

    def summary(self, values: dict) -> None:
        self._safely(lambda: self.run.summary.update(values))

    def finish(self, exit_code: int = 0) -> None:
        self._safely(lambda: self.run.finish(exit_code=exit_code))
