"""Checks of the composed config that belong to no one component, run before anything is loaded:
the run's own top-level keys (``ipc``, ``seed``, ``iterations``, ``device``, the data's place,
``zca``...) and the combinations of groups (plug-in and method, method and CMI, MTT's student
and its experts). Every component checks its own keys where it is built (``cmidd.components``).
Each failure is a ``UserError`` naming the key, its value and what would be valid."""

import logging
import math
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from .config import missing_entry
from .errors import UserError, check_choice, check_number
from .methods.base import method_class

log = logging.getLogger(__name__)
UNRESOLVED = object()  # a value whose table entry is looked up only after the data are checked


def _value(cfg: DictConfig, key: str, strict: bool = True):
    """The resolved value of ``key``. A lookup that fails (e.g. a hyper-parameter table without
    an entry for this IPC) is a ``UserError``, or ``UNRESOLVED`` when not ``strict``."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        if missing_entry(value) and not strict:
            return UNRESOLVED
        if missing_entry(value):
            raise UserError(f"{key} cannot be resolved: {missing_entry(value)}")
        return value
    except MissingMandatoryValue:
        raise UserError(
            f"{key}=??? is not set and has no default: add {key}=<value> to the command"
        ) from None
    except InterpolationResolutionError as error:
        if not strict:
            return UNRESOLVED
        reason = re.sub(
            r"^\w+ raised while resolving interpolation: ", "", str(error).splitlines()[0]
        )
        raise UserError(f"{key} cannot be resolved: {reason}") from None


def _number(cfg: DictConfig, key: str, minimum: float, integer: bool, strict: bool = True):
    value = _value(cfg, key, strict)
    return value if value is UNRESOLVED else check_number(key, value, minimum, integer)


def _choice(cfg: DictConfig, key: str, choices: tuple, strict: bool = True):
    value = _value(cfg, key, strict)
    return value if value is UNRESOLVED else check_choice(key, value, choices)


def _leaves(node, prefix: str = ""):
    """(key, node) of every leaf of the config tree, without resolving anything."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        name = f"{prefix}{key}" if isinstance(node, DictConfig) else f"{prefix[:-1]}[{key}]"
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_interpolation():
            yield from _leaves(child, f"{name}.")
        else:
            yield name, node, key


def check_finite(cfg: DictConfig) -> None:
    """No number of the config may be NaN or infinite: no weight, learning rate, size or ratio
    of a run means anything there. Values that cannot be resolved yet are checked where used."""
    for name, parent, key in _leaves(cfg):
        try:
            value = parent[key]
        except Exception:  # noqa: BLE001 -- unresolvable here; its own check reports it
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{name}={value} is invalid: it must be a finite number")


def combination(cfg: DictConfig) -> str:
    """Why the chosen groups do not run together, for a run that is skipped (None when they do):
    a plug-in on a method it does not plug into (with ``plugin.unsupported=skip``; an error
    otherwise), a CMI option on a method that takes no CMI term (a coreset in ``sweep=table1``).
    A student of trajectory matching (MTT) that is not the experts' architecture is an error."""
    method = cfg.method
    unsupported = _choice(cfg, "plugin.unsupported", ("error", "skip"))
    plugs_into = cfg.plugin.methods
    if plugs_into is not None and method.name not in plugs_into:
        why = (
            f"plugin={cfg.plugin.name} does not plug into method={method.name}: "
            f"it plugs into {', '.join(plugs_into)}"
        )
        if unsupported == "error":
            raise UserError(why)
        return why
    declared = method_class(method)
    if "expert" in declared.needs:
        _check_student(method.algorithm.net, cfg.expert.net)
    if not declared.takes_cmi and cfg.cmi.name != "none":
        return (
            f"method={method.name} takes no CMI term, so cmi={cfg.cmi.name} has nothing "
            "to add: its cmi=none run is the result"
        )
    return None


def _check_student(student: DictConfig, experts: DictConfig) -> None:
    student = OmegaConf.to_container(student, resolve=True)
    experts = OmegaConf.to_container(experts, resolve=True)
    if student != experts:
        raise UserError(
            f"method.algorithm.net={student} differs from expert.net={experts}: the "
            "student must be the experts' architecture"
        )


def check_config(cfg: DictConfig) -> None:
    """The run's own keys, before anything is loaded (``zca.enabled``, a table lookup by IPC for
    MTT, is checked where the data are loaded if the lookup fails here)."""
    check_finite(cfg)
    _number(cfg, "ipc", 1, integer=True)
    _number(cfg, "seed", 0, integer=True)
    _number(cfg, "iterations", 0, integer=True)  # a table lookup by benchmark at most
    _number(cfg, "log_every", 1, integer=True)
    _number(cfg, "loss_every", 1, integer=True)
    _number(cfg, "checkpoint.every", 0, integer=True)
    check_zca(cfg, strict=False)
    check_device(cfg.device)
    check_data_source(cfg)


def check_zca(cfg: DictConfig, strict: bool = True) -> None:
    _choice(cfg, "zca.enabled", (True, False), strict)
    eps = _number(cfg, "zca.eps", 0, integer=False)
    if eps == 0:
        raise UserError(
            "zca.eps=0 is invalid: it must be > 0 (it regularizes the inverse square "
            "root of the pixel covariance's eigenvalues)"
        )


def check_device(device: str) -> None:
    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"device={device} is invalid: it must be auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but CUDA is not available on this machine; use device=cpu")


def check_data_source(cfg: DictConfig) -> None:
    """A dataset that cannot download needs its files where the config says."""
    loader = cfg.dataset.loader
    keys = set(loader.keys())  # `in` is False for a mandatory value left unset (???)
    if "root" in keys and not loader.get("archive"):
        root = Path(_value(cfg, "dataset.loader.root")).expanduser()
        if not root.is_dir():
            raise UserError(f"dataset.loader.root={root} does not exist")
    for split in ("train", "test"):
        node = loader.get(split)
        if node is not None and "root" in node and not node.get("download"):
            root = Path(_value(cfg, f"dataset.loader.{split}.root")).expanduser()
            if not root.is_dir():
                raise UserError(
                    f"data_root={root} does not exist for dataset={cfg.dataset.name}; "
                    "set data_root=<dir with the data> or download=true"
                )
    if loader.get("archive"):
        archive = Path(_value(cfg, "dataset.loader.archive")).expanduser()
        root = Path(_value(cfg, "dataset.loader.root")).expanduser()
        if not root.is_dir() and not archive.is_file():
            raise UserError(f"dataset.loader.archive={archive} does not exist")
