"""Checks of the composed config that run before any expensive work. Each failure is a
``UserError`` naming the key, its value and what would be valid."""

import logging
import math
import re
from pathlib import Path

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from .cmi import SPACES
from .cmi_weight import MODES
from .errors import UserError

log = logging.getLogger(__name__)
UNRESOLVED = object()  # a value whose table entry is looked up only after the data are checked


def _value(cfg: DictConfig, key: str, strict: bool = True):
    """The resolved value of ``key``. A lookup that fails (e.g. a hyper-parameter table without
    an entry for this IPC) is a ``UserError``, or ``UNRESOLVED`` when not ``strict``."""
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
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
    if value is UNRESOLVED:
        return value
    kind = int if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, kind)
        or not math.isfinite(value)
        or value < minimum
    ):
        what = "an integer" if integer else "a finite number"
        raise UserError(f"{key}={value} is invalid: it must be {what} >= {minimum}")
    return value


def _choice(cfg: DictConfig, key: str, choices: tuple, strict: bool = True):
    value = _value(cfg, key, strict)
    if value is not UNRESOLVED and value not in choices:
        names = ", ".join(str(c).lower() if isinstance(c, bool) else c for c in choices)
        raise UserError(f"{key}={value} is invalid: it must be one of {names}")


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


def check_eval_nets(cfg: DictConfig) -> None:
    """``eval.nets.<arch>=null`` leaves an architecture out; one must remain, and each must be a
    whole net config (a preset's partial key for another protocol's net is not one)."""
    nets = {k: v for k, v in cfg.eval.nets.items() if v is not None}
    if not nets:
        raise UserError("eval.nets is empty: at least one architecture must be evaluated")
    for arch, net in nets.items():
        if "_target_" not in net:
            raise UserError(f"eval.nets.{arch}={OmegaConf.to_container(net)} is not a net config")


def check_cmi_weight(cfg: DictConfig, strict: bool = True) -> None:
    """``cmi.weight``: a number >= 0, or ``auto`` with its settings (``cmi.auto``)."""
    weight = _value(cfg, "cmi.weight", strict)
    if isinstance(weight, str) and weight != "auto":
        raise UserError(f"cmi.weight={weight} is invalid: it must be a number >= 0 or auto")
    if weight != "auto":
        _number(cfg, "cmi.weight", 0, integer=False, strict=strict)
        return
    _choice(cfg, "cmi.auto.mode", MODES)
    _number(cfg, "cmi.auto.calibrate", 1, integer=True)
    _number(cfg, "cmi.auto.momentum", 0, integer=False)
    if _number(cfg, "cmi.auto.ratio", 0, integer=False) == 0:
        raise UserError("cmi.auto.ratio=0 is invalid: it must be a positive number")
    if cfg.cmi.auto.momentum >= 1:
        raise UserError(f"cmi.auto.momentum={cfg.cmi.auto.momentum} is invalid: it must be < 1")


def plugin_mismatch(cfg: DictConfig) -> str:
    """Why ``plugin`` does not apply to ``method`` (None when it does)."""
    methods = cfg.plugin.methods
    if methods is None or cfg.method.name in methods:
        return None
    return (
        f"plugin={cfg.plugin.name} does not plug into method={cfg.method.name}: "
        f"it plugs into {', '.join(methods)}"
    )


def check_config(cfg: DictConfig, strict: bool = True) -> None:
    """The settings of a distillation run. Not ``strict``: before the data are loaded, table
    lookups that fail are left for the strict pass (so that an IPC larger than a class is
    reported as such, not as a missing table entry for that IPC)."""
    check_finite(cfg)
    _number(cfg, "ipc", 1, integer=True)
    _number(cfg, "seed", 0, integer=True)
    _number(cfg, "iterations", 0, integer=True, strict=strict)
    _number(cfg, "log_every", 1, integer=True)
    _number(cfg, "loss_every", 1, integer=True)
    _number(cfg, "checkpoint.every", 0, integer=True)
    check_cmi_weight(cfg, strict)
    _number(cfg, "cmi.every", 1, integer=True)
    _number(cfg, "eval.models", 1, integer=True)
    _number(cfg, "eval.epochs", 1, integer=True)
    _number(cfg, "eval.every", 0, integer=True, strict=strict)
    _number(cfg, "proxy.pool_size", 1, integer=True)
    _choice(cfg, "cmi.space", SPACES)
    check_eval_nets(cfg)
    _choice(cfg, "plugin.unsupported", ("error", "skip"))
    if plugin_mismatch(cfg):
        raise UserError(plugin_mismatch(cfg))
    if "vectorize" in cfg.eval:  # the protocols of cmidd.evaluate (not eval=kd)
        _choice(cfg, "eval.vectorize", ("auto", True, False))
    if cfg.method.name == "sre2l" and cfg.eval._target_ != "cmidd.kd_eval.KDEvaluator":
        log.warning("method=sre2l with an eval=... other than kd: the set's soft labels go unused")
    check_zca(cfg, strict)
    if "expert" in cfg.method.get("needs", []):
        check_trajectory_matching(cfg, strict)
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


def check_trajectory_matching(cfg: DictConfig, strict: bool = True) -> None:
    for key in ("syn_steps", "expert_epochs", "max_start_epoch", "batch_syn"):
        _number(cfg, f"method.algorithm.{key}", 1, integer=True, strict=strict)
    for key in ("expert.count", "expert.recipe.epochs", "expert.recipe.batch_size"):
        _number(cfg, key, 1, integer=True)
    if cfg.method.get("synthetic_lr") is None:
        raise UserError(
            f"method={cfg.method.name} learns the training lr: it needs "
            "method.synthetic_lr.init and method.synthetic_lr.lr"
        )
    student = OmegaConf.to_container(cfg.method.algorithm.net, resolve=True)
    experts = OmegaConf.to_container(cfg.expert.net, resolve=True)
    if student != experts:
        raise UserError(
            f"method.algorithm.net={student} differs from expert.net={experts}: the "
            "student must be the experts' architecture"
        )
    _number(cfg, "method.synthetic_lr.lr", 0, integer=False, strict=strict)


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


def check_data(cfg: DictConfig, real) -> None:
    """What needs the loaded data: a set initialized from real images needs IPC (times
    factor^2 for a multi-formulation method) distinct images of every class."""
    smallest = min(len(images) for images in real.train)
    per_image = cfg.method.get("factor", 1) ** 2 if cfg.method.get("init") == "real" else 1
    if cfg.ipc * per_image > smallest:
        needs = f" ({per_image} real images per stored image)" if per_image > 1 else ""
        raise UserError(
            f"ipc={cfg.ipc} is invalid: the smallest class of dataset="
            f"{cfg.dataset.name} has {smallest} training images{needs}"
        )


def check_synthetic(path, synthetic, real) -> None:
    """A saved synthetic set must fit the dataset it is evaluated on."""
    shape = tuple(synthetic.images.shape[1:])
    if shape != real.shape or int(synthetic.labels.max()) >= real.num_classes:
        raise UserError(
            f"synthetic={path} holds images of shape {shape} with labels up to "
            f"{int(synthetic.labels.max())}; dataset={real.name} has {real.shape} and "
            f"{real.num_classes} classes"
        )
    if synthetic.targets is not None and synthetic.targets.shape[1] != real.num_classes:
        raise UserError(
            f"synthetic={path} holds soft labels over {synthetic.targets.shape[1]} "
            f"classes; dataset={real.name} has {real.num_classes}"
        )
    distilled_on = synthetic.meta.get("dataset", {}).get("zca")
    if distilled_on != real.meta.get("zca"):
        raise UserError(
            f"synthetic={path} was distilled on data with zca={distilled_on}, this run's "
            f"data have zca={real.meta.get('zca')}: set zca.enabled="
            f"{str(distilled_on is not None).lower()}"
        )
    if any(
        abs(a - b) > 1e-4
        for a, b in zip(synthetic.mean + synthetic.std, real.mean + real.std, strict=True)
    ):
        raise UserError(
            f"synthetic={path} was normalized with mean={list(synthetic.mean)}, "
            f"std={list(synthetic.std)}; dataset={real.name} uses "
            f"mean={list(real.mean)}, std={list(real.std)}"
        )
