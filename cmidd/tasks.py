"""The launcher's tasks (``task=distill|evaluate|pretrain|buffer``): build components from config
and run."""

import logging
import shutil
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from . import batching, distributed, overrides, pretrained
from .checkpoint import Checkpointer
from .components import built, components, load_real
from .distill import Distillation
from .errors import UserError
from .files import write_json
from .loggers import chosen, run_labels
from .manifest import manifest
from .overrides import pasteable
from .runtime import resolve_device
from .validate import check_data_source, check_device, combination

log = logging.getLogger(__name__)


def distill(cfg: DictConfig, out_dir: Path) -> dict:
    skipped = combination(cfg)
    if skipped:
        return _skip(cfg, out_dir, skipped)
    distributed.one_process("task=distill")
    tic = time.perf_counter()
    parts = components(cfg)
    about = manifest(parts.device, parts.real) | {"seconds": {"setup": time.perf_counter() - tic}}
    iterations = cfg.iterations
    if not parts.method.iterates and iterations != 0:
        log.warning(
            "the method selects its set and does not iterate: iterations=%s is ignored", iterations
        )
        cfg.iterations = iterations = 0
    out_dir.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)
    checkpointer = Checkpointer(out_dir / "checkpoint.pt", cfg.checkpoint.every)
    unused = tuple(f"{kind}." for kind in ("expert", "teacher") if kind not in parts.method.needs)
    state = checkpointer.load(config, unused)
    overrides.record(out_dir)  # after the checkpoint accepted them: resume= reads them back
    logger = instantiate(cfg.logger)(
        config=config,
        out_dir=out_dir,
        labels=run_labels(cfg),
        run_id=state and state["logger_run_id"],
    )
    run = Distillation(
        parts,
        iterations,
        out_dir,
        logger,
        checkpointer,
        config=config,
        log_every=cfg.log_every,
        loss_every=cfg.loss_every,
        manifest=about,
    )
    checkpointer.install_signal_handlers()
    try:
        results = run.run(state)
    except BaseException as error:
        run.fail(error)
        logger.finish(exit_code=1)
        raise
    finally:
        checkpointer.restore_signal_handlers()
    if parts.shard is None:  # a shard's set is a part: its merge is the result
        _log_final(logger, results, out_dir, cfg)
    logger.finish()
    log.info("results in %s", out_dir.resolve())
    if overrides.used() is not None and (out_dir / "synthetic.pt").is_file():
        again = pasteable("synthetic", (out_dir / "synthetic.pt").resolve())
        log.info("evaluate it again: %s", overrides.command("evaluate", overrides.used(), again))
    return results


def _skip(cfg: DictConfig, out_dir: Path, why: str) -> dict:
    log.warning("skipped: %s", why)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"status": f"skipped: {why}", "config": _recorded(cfg)}
    write_json(out_dir / "results.json", results)
    return results


def _log_final(logger, results: dict, out_dir: Path, cfg: DictConfig) -> None:
    logger.curve(results["accuracy_curve"])
    summary = {
        "cmi/start": results["cmi"]["start"],
        "cmi/end": results["cmi"]["end"],
        "seconds_per_iteration": results["seconds_per_iteration"],
        "cmi/weight": results["cmi"].get("weight"),
    }
    for arch, r in results["accuracy"].items():
        summary |= {f"accuracy/{arch}": r["mean"], f"accuracy/{arch}_std": r["std"]}
    logger.summary(summary)
    named = chosen(cfg)
    logger.artifact(
        out_dir / "synthetic.pt",
        f"synthetic-{named['method']}-{named['dataset']}-ipc{cfg.ipc}",
        "dataset",
        {
            "method": named["method"],
            "dataset": named["dataset"],
            "ipc": cfg.ipc,
            "cmi_weight": results["cmi"].get("weight"),  # the weight used (auto: the chosen one)
            "seed": cfg.seed,
        },
    )


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
    evaluator = built(lambda: instantiate(cfg.eval), cfg.eval, "eval")
    if distributed.launched() and not getattr(evaluator, "data_parallel", False):
        raise UserError(
            f"eval={cfg.eval._target_.rsplit('.', 1)[-1]} runs in one process; under torchrun "
            "task=evaluate is data-parallel with eval=kd only"
        )
    batching.from_config(cfg)
    device = distributed.setup(cfg.device)
    try:
        return _evaluate(cfg, out_dir, evaluator, device)
    finally:
        distributed.finish()


def _evaluate(cfg: DictConfig, out_dir: Path, evaluator, device) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    synthetic, real = read_set(cfg, device)
    images, labels = synthetic.train_set()
    stream = f"eval/{synthetic.meta.get('iteration', 0)}"
    soft = {} if synthetic.relabel is None else {"soft_labels": synthetic.relabel}
    accuracy = evaluator(
        images, labels, real, cfg.seed, stream=stream, lr=synthetic.learned_lr, **soft
    )
    results = {
        "accuracy": accuracy,
        "synthetic": str(cfg.synthetic),
        "status": "finished",
        "config": _recorded(cfg),
        "processes": distributed.size(),
        "manifest": manifest(device, real),
    }
    if distributed.is_main():
        write_json(out_dir / "results.json", results)
    for arch, r in accuracy.items():
        log.info("%s: accuracy %.4f ± %.4f", arch, r["mean"], r["std"])
    log.info("results in %s", out_dir.resolve())
    return results


def read_set(cfg: DictConfig, device) -> tuple:
    """``synthetic=<path>`` read with ``format=...`` into the dataset's space, and the data."""
    reader = built(lambda: instantiate(cfg.format.file), cfg.format.file, "format.file")
    real = load_real(cfg, device)
    return reader.read(Path(cfg.synthetic).expanduser(), real), real


def export(cfg: DictConfig, out_dir: Path) -> dict:
    """Write ``synthetic=<path>`` (read with ``format=...``) as ``export=...`` writes sets, into
    ``export.to`` (default: ``<run dir>/<format>``)."""
    if not cfg.get("synthetic"):
        raise UserError("task=export needs synthetic=<path> (and export=image_folder|mtt|vico)")
    check_device(cfg.device)
    writer = built(lambda: instantiate(cfg.export.file), cfg.export.file, "export.file")
    synthetic, _ = read_set(cfg, resolve_device(cfg.device))
    if synthetic.relabel is not None:
        log.warning(
            "the set's FKD soft labels (method=sre2l's relabel) are not exported: images only"
        )
    to = Path(cfg.export.to).expanduser() if cfg.export.to else out_dir / cfg.export.name
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise UserError(f"export.to={to} is not an empty folder: choose an empty or new one")
    partial = to.with_name(f"{to.name}.partial")  # a failure leaves no half-written set at `to`
    shutil.rmtree(partial, ignore_errors=True)
    writer.write(synthetic, partial)
    shutil.rmtree(to, ignore_errors=True)
    partial.rename(to)
    log.info("%s written as format=%s in %s", cfg.synthetic, cfg.export.name, to.resolve())
    return {"to": str(to), "format": cfg.export.name}


def build_pretrained(cfg: DictConfig, out_dir: Path, kind: str) -> dict:
    """Build (or grow) the cache of one kind of pre-trained network (``task=pretrain``: the proxy
    pool of ``proxy=...``; ``task=buffer``: the expert trajectories of ``expert=...``)."""
    distributed.one_process(f"building the {kind} cache")
    check_device(cfg.device)
    check_data_source(cfg)
    device = resolve_device(cfg.device)
    batching.from_config(cfg)
    real = load_real(cfg, device)
    metas = pretrained.build(kind, cfg, real, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "kind": kind,
        "directory": str(pretrained.location(kind, cfg, real)),
        "items": len(metas),
        "test_accuracy": [m["test_accuracy"] for m in metas],
    }
    write_json(out_dir / "pretrained.json", summary)
    log.info("%s ready in %s", pretrained.kind(kind).what, summary["directory"])
    return summary
