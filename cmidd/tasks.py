"""The launcher's tasks (``task=distill|pretrain``): build components from config and run."""
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .checkpoint import Checkpointer, Preempted
from .cmi import CMITerm
from .distill import Distillation, write_json
from .errors import UserError
from .loggers import run_labels
from .proxy import PoolError, build_pool, load_pool, pool_dir, random_pool
from .runtime import generator, resolve_device, seed_everything
from .synthetic import SyntheticSet
from .validate import (check_config, check_data, check_data_source, check_device,
                       check_synthetic)

log = logging.getLogger(__name__)


def _pool_location(cfg: DictConfig, real) -> tuple:
    net_config = OmegaConf.to_container(cfg.proxy.net, resolve=True)
    recipe = OmegaConf.to_container(cfg.proxy.recipe, resolve=True)
    # The loader's settings except where the files are (a moved dataset keeps its pools).
    loader = {k: v for k, v in OmegaConf.to_container(cfg.dataset.loader, resolve=True).items()
              if k not in ("root", "archive", "train", "test")}
    directory = pool_dir(Path(cfg.cache_dir) / "proxies", {**real.meta, "loader": loader},
                         cfg.proxy.name, net_config, recipe, cfg.proxy.seed)
    return directory, net_config, recipe


def _rebuild_command(cfg: DictConfig) -> str:
    """The exact ``task=pretrain`` command for this run's pool, from the run's own overrides."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
    except ValueError:  # composed outside a Hydra app (tests, notebooks)
        overrides = [f"dataset={cfg.dataset.name}", f"proxy={cfg.proxy.name}"]
    keep = ("dataset", "proxy", "experiment", "cache_dir", "data_root")
    kept = [o for o in overrides if o.lstrip("+~").split("=")[0].split(".")[0] in keep
            and not o.startswith(("proxy.build_if_missing", "proxy.pool_size"))]
    return " ".join(["python launch.py task=pretrain", *kept, f"proxy.pool_size={cfg.proxy.pool_size}"])


def build_proxy_pool(cfg: DictConfig, real, device):
    """The run's proxy pool: untrained nets for ``cmi.pretrained=false``, else the cached
    pre-trained pool, built first when missing if ``proxy.build_if_missing``."""
    make_net = instantiate(cfg.proxy.net)
    if not cfg.cmi.pretrained:
        return random_pool(make_net, cfg.proxy.pool_size, real, cfg.proxy.seed, device)
    directory, net_config, recipe = _pool_location(cfg, real)
    if cfg.proxy.build_if_missing:
        build_pool(directory, make_net, cfg.proxy.pool_size, real, recipe, cfg.proxy.seed, device,
                   net_config)
    return load_pool(directory, make_net, cfg.proxy.pool_size, real, device, _rebuild_command(cfg))


def load_real(cfg: DictConfig, device):
    log.info("loading dataset %s", cfg.dataset.name)
    try:
        return instantiate(cfg.dataset.loader, device=device)
    except InstantiationException as error:
        cause = error.__cause__ or error
        raise UserError(f"dataset={cfg.dataset.name} could not be loaded: {cause} "
                        f"(data_root={cfg.data_root}, download={cfg.download})") from error


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
        pool = build_proxy_pool(cfg, real, device)
    except PoolError:
        if weight > 0:
            raise
        log.warning("no proxy pool for this run: cmi.start and cmi.end are not measured")
        return None
    return CMITerm(pool, cfg.cmi.space, generator(cfg.seed, "proxy"), cfg.cmi.per_class)


def components(cfg: DictConfig, real=None) -> SimpleNamespace:
    """What a distillation run is made of, built from config: the real data, the method, the CMI
    term, the synthetic set and its optimizer (also used by benchmarks/run.py)."""
    _keep_baseline(cfg)
    check_config(cfg)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    real = load_real(cfg, device) if real is None else real
    check_data(cfg, real)
    weight = float(cfg.cmi.weight)
    method = instantiate(cfg.method.algorithm)(real=real, seed=cfg.seed, device=device)
    cmi = _cmi_term(cfg, real, device, weight, method)
    synthetic = SyntheticSet.from_real(real, cfg.ipc, generator(cfg.seed, "init"), cfg.method.init,
                                       cfg.method.get("factor", 1))
    optimizer = instantiate(cfg.method.optimizer)([synthetic.images])
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
        if not isinstance(error, Preempted):
            run.results["status"] = f"failed: {type(error).__name__}: {error}"
            write_json(out_dir / "results.json", run.results)
        logger.finish(exit_code=1)
        raise
    finally:
        synthetic.save(out_dir / "synthetic.pt", iteration=run.done, seed=cfg.seed,
                       dataset=real.meta)
        synthetic.save_grid(out_dir / "synthetic.png")
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
    accuracy = instantiate(cfg.eval)(images, labels, real, cfg.seed, stream=stream)
    results = {"accuracy": accuracy, "synthetic": str(cfg.synthetic), "status": "finished",
               "config": OmegaConf.to_container(cfg, resolve=True)}
    write_json(out_dir / "results.json", results)
    for arch, r in accuracy.items():
        log.info("%s: accuracy %.4f ± %.4f", arch, r["mean"], r["std"])
    return results


def pretrain(cfg: DictConfig, out_dir: Path) -> dict:
    check_device(cfg.device)
    check_data_source(cfg)
    device = resolve_device(cfg.device)
    real = load_real(cfg, device)
    directory, net_config, recipe = _pool_location(cfg, real)
    log.info("building %d %s proxies in %s", cfg.proxy.pool_size, cfg.proxy.name, directory)
    metas = build_pool(directory, instantiate(cfg.proxy.net), cfg.proxy.pool_size, real, recipe,
                       cfg.proxy.seed, device, net_config)
    summary = {"pool": str(directory), "test_accuracy": [m["test_accuracy"] for m in metas]}
    write_json(out_dir / "pool.json", summary)
    log.info("proxy pool ready in %s", directory)
    return summary
