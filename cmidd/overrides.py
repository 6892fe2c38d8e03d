"""The overrides of a run's command, kept in its directory (``overrides.yaml``), so that
``resume=<run dir>`` needs none of them again.

Hydra writes ``.hydra/overrides.yaml`` too, but rewrites it whenever a command runs in that
directory (``resume=<dir> hydra.run.dir=<dir>``), before the run starts; cmidd's own file is
written by the run, after it has read the old one, and holds the overrides the run used: the
saved ones under those of each resuming command.
"""

from pathlib import Path

import yaml
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from .errors import UserError

FILE = "overrides.yaml"
_used = {"overrides": None}


def key(override: str) -> str:
    """The key or group an override sets (``+a.b=1`` -> ``a.b``)."""
    return override.split("=", 1)[0].lstrip("+~")


def used() -> list:
    """The overrides of this process's run, saved ones included (None outside the launcher)."""
    return _used["overrides"]


def _launched() -> bool:
    return GlobalHydra.instance().is_initialized() and HydraConfig.initialized()


def _saved(run_dir: Path) -> list:
    """The run's overrides: cmidd's file, else Hydra's, unless this command rewrote Hydra's."""
    own, hydra = run_dir / FILE, run_dir / ".hydra" / "overrides.yaml"
    rewritten = Path(HydraConfig.get().runtime.output_dir).resolve() == run_dir.resolve()
    path = own if own.is_file() else (None if rewritten else hydra)
    if path is None or not path.is_file():
        return []
    return [str(o) for o in yaml.safe_load(path.read_text()) or []]  # values stay unresolved


def for_run(cfg: DictConfig, out_dir: Path, resume: bool) -> DictConfig:
    """The run's config: as composed, or on ``resume``, composed from the run's saved overrides
    under this command's (``record`` saves them once the checkpoint has accepted them)."""
    if not _launched():
        return cfg
    current = list(HydraConfig.get().overrides.task)
    overrides = current
    if resume:
        given = {key(o) for o in current}
        overrides = [o for o in _saved(out_dir) if key(o) not in given] + current
        try:
            cfg = compose(config_name=HydraConfig.get().job.config_name, overrides=overrides)
        except (HydraException, OmegaConfBaseException) as error:
            reason = str(error).strip().splitlines()[0]
            raise UserError(
                f"resume={out_dir}: its overrides with this command's do not compose ({reason}): "
                f"{' '.join(overrides)}"
            ) from None
    _used["overrides"] = overrides
    return cfg


def record(out_dir: Path) -> None:
    """Writes the run's overrides to ``out_dir/overrides.yaml`` (atomically), under the
    launcher."""
    if used() is None:
        return
    tmp = out_dir / f".{FILE}.tmp"
    tmp.write_text(yaml.safe_dump(used()))
    tmp.replace(out_dir / FILE)
