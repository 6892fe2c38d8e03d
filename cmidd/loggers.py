"""Experiment loggers. A logger failure never fails the run: it is reported once and logging
stops, while results are still written to the run directory."""

import logging
import os
from pathlib import Path

from .cmi_weight import weighted

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

    def curve(self, points: list) -> None:
        pass

    def artifact(self, path: Path, name: str, kind: str, metadata: dict = None) -> None:
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


def chosen(cfg) -> dict:
    """The option a run chose in each group that names what it distils (the option's ``name``)."""
    return {group: cfg[group].name for group in ("method", "dataset", "proxy", "plugin")}


def run_labels(cfg) -> dict:
    """The W&B group (a sweep's directory name) and tags of a run, from its config."""
    group = None
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        if hydra_cfg.mode == RunMode.MULTIRUN:
            group = Path(hydra_cfg.sweep.dir).name
    except ValueError:  # composed outside a Hydra app
        pass
    cmi = cfg.cmi.space if weighted(cfg.cmi.weight) else "none"
    tags = [f"{key}:{name}" for key, name in chosen(cfg).items() if name != "none"]
    tags += [f"ipc:{cfg.ipc}", f"cmi:{cmi}"] + ([f"study:{cfg.study}"] if cfg.study else [])
    return {"group": group, "tags": tags}


class WandbLogger(NullLogger):
    """Weights & Biases, offline unless the user has configured W&B for online use. ``group``
    and ``tags`` are added to those the run derives from its config (``run_labels``)."""

    def __init__(
        self,
        config: dict,
        out_dir: Path,
        labels: dict,
        run_id: str = None,
        project: str = "cmidd",
        entity: str = None,
        mode: str = "auto",
        group: str = None,
        tags: list = (),
        name: str = None,
    ):
        self.run = None
        group = group or labels["group"]
        tags = [*labels["tags"], *tags]
        try:
            import wandb

            self.wandb = wandb
            self.run = wandb.init(
                project=project,
                entity=entity,
                mode=_wandb_mode(mode),
                group=group,
                tags=list(tags),
                name=name,
                config=config,
                dir=str(out_dir),
                id=run_id,
                resume="allow" if run_id else None,
                settings=wandb.Settings(console="off"),
            )
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

    def curve(self, points: list) -> None:
        """The accuracy curve as a W&B line plot (one line per architecture)."""

        def plot():
            archs = [k for k in points[0] if k != "iteration"]
            table = self.wandb.Table(
                columns=["iteration", "arch", "accuracy"],
                data=[[p["iteration"], a, p[a]] for p in points for a in archs],
            )
            self.run.log(
                {
                    "accuracy_curve": self.wandb.plot.line(
                        table,
                        "iteration",
                        "accuracy",
                        stroke="arch",
                        title="Accuracy during distillation",
                    )
                }
            )

        if points:
            self._safely(plot)

    def artifact(self, path: Path, name: str, kind: str, metadata: dict = None) -> None:
        def log_artifact():
            artifact = self.wandb.Artifact(name, type=kind, metadata=metadata or {})
            artifact.add_file(str(path))
            self.run.log_artifact(artifact)

        self._safely(log_artifact)

    def finish(self, exit_code: int = 0) -> None:
        self._safely(lambda: self.run.finish(exit_code=exit_code))
