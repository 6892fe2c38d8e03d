"""The overrides of a run's command, kept in its directory (``overrides.yaml``), so that
``resume=<run dir>`` needs none of them again.

Hydra writes ``.hydra/overrides.yaml`` too, but rewrites it whenever a command runs in that
directory (``hydra.run.dir=<dir>``; not ``resume=<dir>``, for which it writes no ``.hydra/``),
before the run starts; cmidd's own file is
written by the run, after it has read the old one, and holds the overrides the run used: the
saved ones under those of each resuming command.
"""

import shlex
from contextlib import contextmanager
from pathlib import Path

import yaml
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from .errors import UserError, describe
from .files import atomic_write

FILE = "overrides.yaml"
_used = {"overrides": None}


def pasteable(key: str, value) -> str:
    """``key=value`` as it is pasted into a shell command: quoted for Hydra and for the shell
    where the value holds what either reads as syntax (a sweep's job directories hold ``=`` and
    ``,``)."""
    text = str(value)
    if not any(c in text for c in " ,=()[]{}'\"\\$*?!&;|<>`#~"):
        return f"{key}={text}"
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return shlex.quote(f'{key}="{escaped}"')


# Overrides of a run that a command for another task must not repeat: the task is another one, a
# sweep is not, and these only make sense for the run itself.
DROPPED = ("task", "resume", "synthetic", "sets", "hydra", "sweep")


def command(task: str, overrides: list, *extra: str) -> str:
    """``python launch.py task=<task>`` with the run's ``overrides`` (but those of ``DROPPED``)
    and ``extra`` ones, ready to paste into a shell."""
    kept = [shlex.quote(o) for o in overrides if key(o).split(".")[0] not in DROPPED]
    return " ".join([f"python launch.py task={task}", *kept, *extra])


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
    rewritten = (  # Hydra rewrote it, unless it writes no .hydra/ there (resume=, conf/config.yaml)
        Path(HydraConfig.get().runtime.output_dir).resolve() == run_dir.resolve()
        and HydraConfig.get().output_subdir is not None
    )
    path = own if own.is_file() else (None if rewritten else hydra)
    if path is None or not path.is_file():
        return []
    try:
        saved = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError) as error:
        saved = error
    if not isinstance(saved, list) or not all(isinstance(o, str) for o in saved):
        raise UserError(
            f"resume={run_dir}: {path} is not a list of overrides ({describe(saved)}); "
            "restore it, or delete it and give the run's overrides on the command line"
        )
    return saved  # the values stay unresolved


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


@contextmanager
def adding(*extra: str):
    """The run's overrides with ``extra`` ones, inside: what a sub-run records as its own."""
    saved = _used["overrides"]
    if saved is not None:
        _used["overrides"] = [*saved, *extra]
    try:
        yield
    finally:
        _used["overrides"] = saved


def record(out_dir: Path) -> None:
    """Writes the run's overrides to ``out_dir/overrides.yaml`` (atomically), under the
    launcher."""
    if used() is None:
        return
    atomic_write(out_dir / FILE, lambda file: file.write(yaml.safe_dump(used()).encode()))
