"""What a run is made of, built from config: the real data, the method, its plug-in technique,
the CMI term and the evaluation protocol; then the pre-trained networks they declare they need
(``needs``), and the synthetic set with its optimizer.

The assembly is generic: every component is built from its group's ``_target_`` and checks its
own keys there, before anything expensive (a pool, a buffer or a teacher built, a distillation);
what a component is (whether it iterates, takes a CMI term, needs experts) it declares on its
class. Nothing here depends on which method or technique was chosen.
"""

import copy
import hashlib
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from . import batching, pretrained
from .config import check_entries
from .data import RealData, Storage, split_validation, whiten
from .errors import UserError
from .methods.base import Method, build_method
from .plugins.base import Plugin
from .runtime import generator, resolve_device, seed_everything
from .shards import Shard, shard_of
from .synthetic import SyntheticSet
from .validate import check_config, check_zca, combination

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """A distillation run's components (``cmidd.distill.Distillation`` loops over them)."""

    device: torch.device
    seed: int
    real: RealData
    method: Method
    plugin: Plugin
    cmi: object  # cmidd.cmi.CMITerm
    evaluator: object  # cmidd.evaluate.Evaluator or cmidd.kd_eval.KDEvaluator
    synthetic: SyntheticSet
    optimizer: torch.optim.Optimizer  # None for a selection of real images
    scheduler: object = None
    shard: Shard = None  # the part of the set this process distils (cmidd/shards.py); None: all


def built(make, node: DictConfig = None, key: str = None):
    """A component, ``make()``, once its config ``node`` (key ``key``) has no key left without
    a table entry; a failed lookup or the component's own check of its keys is one line."""
    try:
        if node is not None:
            check_entries(node, key)
        return make()
    except InterpolationResolutionError as error:
        reason = re.sub(r"^\w+ raised while resolving interpolation: ", "", str(error))
        raise UserError(f"{error.full_key} cannot be resolved: {reason.splitlines()[0]}") from None
    except InstantiationException as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise


def storage(cfg: DictConfig) -> Storage:
    """Where the real images will live (``dataset.storage``); a disk cache is named by the
    loader's options (the data's place and transform included)."""
    loader = OmegaConf.to_container(cfg.dataset.loader, resolve=True)
    key = hashlib.sha1(json.dumps(loader, sort_keys=True, default=str).encode()).hexdigest()
    folder = Path(cfg.data_root).expanduser() / "decoded" / f"{cfg.dataset.name}-{key[:10]}"
    data = cfg.dataset
    return Storage(data.storage, data.memory_budget_gb, folder, data.workers, data.disk_budget_gb)


def load_real(cfg: DictConfig, device) -> RealData:
    log.info("loading dataset %s", cfg.dataset.name)
    try:
        real = instantiate(cfg.dataset.loader, device=device, storage=storage(cfg))
    except InstantiationException as error:
        cause = error.__cause__ or error
        if isinstance(cause, UserError):  # a layout problem, already naming its path
            raise cause from error
        raise UserError(
            f"dataset={cfg.dataset.name} could not be loaded: {cause} "
            f"(data_root={cfg.data_root}, download={cfg.download})"
        ) from error
    real = split_validation(real, cfg.dataset.val.per_class, cfg.dataset.val.seed)
    check_zca(cfg)
    if cfg.zca.enabled:
        log.info("ZCA-whitening the data (eps %g)", cfg.zca.eps)
        real = whiten(real, cfg.zca.eps)
    return real


def keep_baseline(cfg: DictConfig) -> None:
    """A weight given for the CMI runs of a sweep (cmi=none,feature cmi.weight=100) must not turn
    the baseline into a CMI run; the recorded config then says what ran."""
    if cfg.cmi.name == "none" and cfg.cmi.get("weight") != 0:
        log.warning(
            "cmi=none: ignoring cmi.weight=%s (the baseline runs without CMI)",
            cfg.cmi.get("weight"),
        )
        cfg.cmi.weight = 0.0


def proxy_pool(cfg: DictConfig, real, device):
    """The run's proxy pool: untrained networks for ``cmi.pretrained=false``, else the cached,
    pre-trained pool of ``proxy=...``."""
    if not cfg.cmi.pretrained:
        return pretrained.random_pool(cfg.proxy, real, device)
    return pretrained.get("proxy", cfg, real, device)


def _term_pool(cfg: DictConfig, term, loaded: dict, real, device):
    """The pool the CMI term reads (the one loaded for the run, if it is that one); a term with
    weight 0 only measures, and does without a pool that is missing."""
    if term.pretrained and "proxy" in loaded:
        return loaded["proxy"]
    try:
        return proxy_pool(cfg, real, device)
    except pretrained.StoreError:
        if term.active:
            raise
        log.warning("no proxy pool for this run: cmi.start and cmi.end are not measured")
        return None


def measuring_pool(cfg: DictConfig, real, device):
    """The pool that measures the set's CMI: ``proxy.measure.size`` proxies of the recipe the
    term's pool has, from seed ``proxy.measure.seed``, so none was optimized against; None
    (with a warning naming the command that builds it) when it is missing."""
    measured = copy.deepcopy(cfg)
    measured.proxy.seed, measured.proxy.pool_size = cfg.proxy.measure.seed, cfg.proxy.measure.size
    if cfg.proxy.get("from_teacher") and cfg.teacher.weights:
        log.warning("the set's CMI is not measured: a teacher read from a file has no other seed")
        return None
    if cfg.proxy.measure.seed == cfg.proxy.seed:
        raise UserError(
            f"proxy.measure.seed={cfg.proxy.measure.seed} is invalid: the measuring proxies must "
            f"not be the pool's (proxy.seed={cfg.proxy.seed})"
        )
    try:
        return proxy_pool(measured, real, device)
    except pretrained.StoreError as missing:
        log.warning("the set's CMI is not measured: %s", missing)
        return None


def _warn_inert(term, method: Method, evaluator, ipc: int, shard: Shard = None) -> None:
    held = ipc if shard is None else len(shard.indices)  # a shard of IPC indices holds fewer
    if term.active and held == 1 and method.factor == 1:
        weight = "auto" if term.auto else term.fixed
        where = "at ipc=1" if shard is None else f"in shard {shard.index} (one IPC index)"
        warnings.warn(
            f"cmi.weight={weight} {where}: every class has one image, so it is its own "
            "centroid and the CMI term is identically 0",
            stacklevel=3,
        )
    if method.soft_labels and not getattr(evaluator, "soft_labels", False):
        log.warning("the set's soft labels go unused: only eval=kd trains on them")


def components(cfg: DictConfig, real: RealData = None) -> Parts:
    """Everything a distillation run needs (also used by benchmarks/run.py)."""
    keep_baseline(cfg)
    check_config(cfg)
    skipped = combination(cfg)
    if skipped:
        raise UserError(skipped)
    device = resolve_device(cfg.device)
    batching.from_config(cfg)
    seed_everything(cfg.seed)
    # Every component but the method checks its keys before the data are loaded.
    evaluator = built(lambda: instantiate(cfg.eval), cfg.eval, "eval")
    plugin = built(lambda: instantiate(cfg.plugin.technique)(seed=cfg.seed), cfg.plugin, "plugin")
    term = built(lambda: instantiate(cfg.cmi)(generator=generator(cfg.seed, "proxy")))
    if term.fallback:  # the config records what ran, not the missing entry
        cfg.cmi.weight = "auto"
    real = load_real(cfg, device) if real is None else real
    method = built(lambda: build_method(cfg.method, real, cfg.ipc, cfg.seed, device))
    method.use(plugin)
    shard = shard_of(cfg, method, term, real)
    _warn_inert(term, method, evaluator, cfg.ipc, shard)
    # The expensive part, now that every setting is checked: each kind once, in a fixed order.
    pool = ["proxy"] if term.active and term.pretrained else []
    kinds = dict.fromkeys([*method.needs, *plugin.needs, *pool])
    loaded = {kind: pretrained.get(kind, cfg, real, device) for kind in kinds}
    method.provide(**{kind: loaded[kind] for kind in method.needs})
    plugin.provide(**{kind: loaded[kind] for kind in plugin.needs})
    term.use(_term_pool(cfg, term, loaded, real, device), measuring_pool(cfg, real, device))
    part = {} if shard is None else {"classes": shard.classes, "indices": shard.indices}
    synthetic = method.initial_set(real, cfg.ipc, generator(cfg.seed, "init"), **part)
    optimizer = method.optimizer(synthetic)
    return Parts(
        device=device,
        seed=cfg.seed,
        real=real,
        method=method,
        plugin=plugin,
        cmi=term,
        evaluator=evaluator,
        synthetic=synthetic,
        optimizer=optimizer,
        scheduler=method.scheduler(optimizer),
        shard=shard,
    )
