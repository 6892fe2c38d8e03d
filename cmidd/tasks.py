"""The launcher's tasks (``task=distill|evaluate|pretrain|buffer``): build components from config
and run."""
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from . import caches
from .checkpoint import Checkpointer
from .cmi import CMITerm
from .distill import Distillation, write_json
from .errors import UserError
from .loggers import run_labels
from .runtime import generator, resolve_device, seed_everything
from .store import StoreError
from .synthetic import SyntheticSet
from .validate import (check_config, check_data, check_data_source, check_device,
                       check_synthetic, check_zca)
from .whitening import whiten

log = logging.getLogger(__name__)


def load_real(cfg: DictConfig, device):
    log.info("loading dataset %s", cfg.dataset.name)
    try:
        real = instantiate(cfg.dataset.loader, device=device)
    except InstantiationException as error:
        cause = error.__cause__ or error
        raise UserError(f"dataset={cfg.dataset.name} could not be loaded: {cause} "
                        f"(data_root={cfg.data_root}, download={cfg.download})") from error
    check_zca(cfg)
    if cfg.zca.enabled:
        log.info("ZCA-whitening the data (eps %g)", cfg.zca.eps)
        real = whiten(real, cfg.zca.eps)
    return real


def _keep_baseline(cfg: DictConfig) -> None:
    """A weight given for the CMI runs of a sweep (cmi=none,feature cmi.weight=100) must not turn
    the baseline into a CMI run; the recorded config then says what ran."""
    if cfg.cmi.name == "none" and cfg.cmi.get("weight") != 0:
        log.warning("cmi=none: ignoring cmi.weight=%s (the baseline runs without CMI)",
                    cfg.cmi.get("weight"))
        cfg.cmi.weight = 0.0


def _cmi_term(cfg: DictConfig, real, device, weight: float, method):
    """The CMI term of the run; without a pool (and weight 0) CMI is simply not measured."""
    if weight > 0 and cfg.ipc == 1 and not method.multi_formulation:
        warnings.warn(f"cmi.weight={weight} at ipc=1 with method={cfg.method.name}: every class has "
                      "one image, so it is its own centroid and the CMI term is identically 0")
    try:
        pool = caches.proxy_pool(cfg, real, device)
    except StoreError:
        if weight > 0:
            raise
        log.warning("no proxy pool for this run: cmi.start and cmi.end are not measured")
        return None
    return CMITerm(pool, cfg.cmi.space, generator(cfg.seed, "proxy"), cfg.cmi.per_class)


def components(cfg: DictConfig, real=None) -> SimpleNamespace:
    """What a distillation run is made of, built from config: the real data, the method, the CMI
    term, the synthetic set and its optimizer (also used by benchmarks/run.py)."""
    _keep_baseline(cfg)
    check_config(cfg, strict=False)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    real = load_real(cfg, device) if real is None else real
    check_data(cfg, real)
    check_config(cfg)  # the table lookups left for after the data
    weight = float(cfg.cmi.weight)
    extra = {}
    if cfg.method.get("uses_experts"):  # trajectory matching also gets the experts' trajectories
        extra["trajectories"] = caches.trajectories(cfg, real, device)
    method = instantiate(cfg.method.algorithm)(real=real, seed=cfg.seed, device=device, **extra)
    cmi = _cmi_term(cfg, real, device, weight, method)
    learn_lr = cfg.method.get("synthetic_lr")  # a learnable training lr, distilled with the images
    synthetic = SyntheticSet.from_real(real, cfg.ipc, generator(cfg.seed, "init"), cfg.method.init,
                                       cfg.method.get("factor", 1),
                                       None if learn_lr is None else learn_lr.init)
    groups = [{"params": [synthetic.images]}]
    if learn_lr is not None:
        groups.append({"params": [synthetic.lr], "lr": learn_lr.lr})
    optimizer = instantiate(cfg.method.optimizer)(groups)
    return SimpleNamespace(device=device, real=real, weight=weight, method=method, cmi=cmi,
                           synthetic=synthetic, optimizer=optimizer)


def distill(cfg: DictConfig, out_dir: Path) -> dict:
    parts = components(cfg)
    real, weight, method, cmi = parts.real, parts.weight, parts.method, parts.cmi
    synthetic, optimizer = parts.synthetic, parts.optimizer
    out_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    checkpointer = Checkpointer(out_dir / "checkpoint.pt", cfg.checkpoint.every)
    state = checkpointer.load(config)
    logger = instantiate(cfg.logger)(config=config, out_dir=out_dir, labels=run_labels(cfg),
                                     run_id=state and state["logger_run_id"])
    run = Distillation(synthetic, method, optimizer, cfg.iterations, instantiate(cfg.eval), real,
                       cfg.seed, out_dir, logger, cmi=cmi, weight=weight, cmi_every=cfg.cmi.every, log_every=cfg.log_every,
                       config=config, checkpointer=checkpointer)
    checkpointer.install_signal_handlers()
    try:
        results = run.run(state)
    except BaseException as error:
        run.fail(error)
        logger.finish(exit_code=1)
        raise
    finally:
        checkpointer.restore_signal_handlers()
    _log_final(logger, results, out_dir, cfg)
    logger.finish()
    log.info("results in %s", out_dir.resolve())
    return results


def _log_final(logger, results: dict, out_dir: Path, cfg: DictConfig) -> None:
    logger.curve(results["accuracy_curve"])
    summary = {"cmi/start": results["cmi"]["start"], "cmi/end": results["cmi"]["end"],
               "seconds_per_iteration": results["seconds_per_iteration"]}
    for arch, r in results["accuracy"].items():
        summary |= {f"accuracy/{arch}": r["mean"], f"accuracy/{arch}_std": r["std"]}
    logger.summary(summary)
    name = f"synthetic-{cfg.method.name}-{cfg.dataset.name}-ipc{cfg.ipc}"
    logger.artifact(out_dir / "synthetic.pt", name, "dataset",
                    {"method": cfg.method.name, "dataset": cfg.dataset.name, "ipc": cfg.ipc,
                     "cmi_weight": float(cfg.cmi.weight), "seed": cfg.seed})


def _recorded(cfg: DictConfig) -> dict:
    """The config for results.json; evaluation does not need distillation-only keys (such as a
    method's CMI weight) to resolve, so those stay as written when they cannot."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError:
        return OmegaConf.to_container(cfg, resolve=False)


def evaluate(cfg: DictConfig, out_dir: Path) -> dict:
    """Evaluate a saved ``synthetic.pt`` with ``eval=...`` (the same protocol and random streams
    as the evaluation at the end of its distillation, so the same seed gives the same numbers)."""
    if not cfg.get("synthetic"):
        raise UserError("task=evaluate needs synthetic=<path to synthetic.pt>")
    check_device(cfg.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    synthetic = SyntheticSet.load(Path(cfg.synthetic).expanduser(), device)
    real = load_real(cfg, device)
    check_synthetic(cfg.synthetic, synthetic, real)
    images, labels = synthetic.decoded()
    stream = f"eval/{synthetic.meta.get('iteration', 0)}"
    accuracy = instantiate(cfg.eval)(images, labels, real, cfg.seed, stream=stream,
                                     lr=synthetic.learned_lr)
    results = {"accuracy": accuracy, "synthetic": str(cfg.synthetic), "status": "finished",
               "config": _recorded(cfg)}
    write_json(out_dir / "results.json", results)
    for arch, r in accuracy.items():
        log.info("%s: accuracy %.4f ± %.4f", arch, r["mean"], r["std"])
    return results


def _cache_task(cfg: DictConfig):
    check_device(cfg.device)
    check_data_source(cfg)
    device = resolve_device(cfg.device)
    return load_real(cfg, device), device


def pretrain(cfg: DictConfig, out_dir: Path) -> dict:
    """Build (or grow) the proxy pool of ``proxy=...`` for the data."""
    real, device = _cache_task(cfg)
    metas = caches.build_proxies(cfg, real, device)
    summary = {"pool": str(caches.location(cfg, real, "proxy")),
               "test_accuracy": [m["test_accuracy"] for m in metas]}
    write_json(out_dir / "pool.json", summary)
    log.info("proxy pool ready in %s", summary["pool"])
    return summary


def buffer(cfg: DictConfig, out_dir: Path) -> dict:
    """Train (or add to) the expert trajectories of ``expert=...`` for trajectory matching."""
    real, device = _cache_task(cfg)
    metas = caches.build_expert_buffer(cfg, real, device)
    summary = {"buffer": str(caches.location(cfg, real, "expert")),
               "epochs": cfg.expert.recipe.epochs,
               "test_accuracy": [m["test_accuracy"] for m in metas]}
    write_json(out_dir / "buffer.json", summary)
    log.info("expert buffer ready in %s", summary["buffer"])
    return summary
