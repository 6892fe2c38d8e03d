"""``task=merge``: the shards of a sharded run (cmidd/shards.py) joined into one
``synthetic.pt``, finished by the method's last stage (SRe2L's relabel), evaluated with the
run's protocol and streams and measured under its measuring proxy; also run by ``sweep=shards``
once its jobs have finished (``MergeShards``)."""

import json
import logging
import re
import sys
from pathlib import Path

import torch
import yaml
from hydra import compose
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import batching, files, overrides, pretrained
from .checkpoint import NEUTRAL, flatten
from .cmi import SPACES, set_cmi
from .components import load_real, measuring_pool
from .errors import UserError, describe
from .evaluate import evaluate_set
from .methods.base import build_method
from .neutral import HOW
from .runtime import generator, resolve_device
from .shards import SET
from .synthetic import SyntheticSet

log = logging.getLogger(__name__)


def _run_key(config: dict) -> str:
    """What the shards of one run share: the config but the shard's index and the keys that
    change no result (a shard re-run with ``resume=``, on another device, ...)."""
    kept = {
        k: v for k, v in flatten(config).items() if k != "shard.index" and not k.startswith(NEUTRAL)
    }
    return json.dumps(kept, sort_keys=True, default=str)


def find(root: Path) -> dict:
    """The shards under ``root``, by run: {run key: {index: (directory, results)}}."""
    runs = {}
    for path in sorted(root.rglob("results.json")):
        results = json.loads(path.read_text())
        shard = results.get("config", {}).get("shard") or {}
        if shard.get("count", 1) > 1:
            run = runs.setdefault(_run_key(results["config"]), {})
            if shard["index"] in run:
                raise UserError(
                    f"shards={root} is invalid: shard {shard['index']} of one run is in both "
                    f"{run[shard['index']][0]} and {path.parent}; keep one"
                )
            run[shard["index"]] = (path.parent, results)
    if not runs:
        raise UserError(f"shards={root} is invalid: no shard's results.json under it")
    return runs


def _read_parts(shards: dict, count: int) -> list:
    """Each shard's set, after checking that all ``count`` shards finished."""
    missing = [k for k in range(count) if k not in shards]
    if missing:
        where = shards[min(shards)][0].parent
        raise UserError(
            f"shard(s) {missing} of {count} missing under {where}: run them (shard.index=...) "
            "and merge again"
        )
    commits = {(r.get("manifest") or {}).get("commit") for _, r in shards.values()}
    if len(commits) > 1:
        raise UserError(
            f"shards under {shards[0][0].parent} ran at different commits "
            f"({', '.join(sorted(map(str, commits)))}): re-run them at one"
        )
    parts = []
    for k in range(count):
        folder, results = shards[k]
        if results.get("status") != "finished":
            raise UserError(
                f"shard {k} of {count} in {folder} did not finish ({results.get('status')}): "
                "run it again (resume=<its directory>) and merge again"
            )
        parts.append(SyntheticSet.load(folder / SET))
    return parts


def join(parts: list) -> SyntheticSet:
    """One set from the shards' sets (in shard order), class by class: a shard of classes
    brings whole classes, a shard of IPC indices the next indices of every class."""
    first = parts[0]
    images = torch.cat([p.images.detach() for p in parts])
    labels = torch.cat([p.labels for p in parts])
    order = torch.argsort(labels, stable=True)
    return SyntheticSet(
        images[order], labels[order], first.mean, first.std, first.factor, first.learned_lr
    )


def _composed(folder: Path, recorded: dict, device: str, config_name: str) -> DictConfig:
    """The whole run's config: composed again from a shard's saved overrides (the recorded one
    is resolved, so keys derived from others, such as a cache's key, would not follow a change),
    and checked against what the shard recorded."""
    path = folder / overrides.FILE
    try:
        saved = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"shards: {path} cannot be read ({describe(error)})") from None
    kept = [o for o in saved if overrides.key(o).split(".")[0] not in ("shard", "hydra", "sweep")]
    try:
        cfg = compose(
            config_name=config_name, overrides=[*kept, "shard.count=1", f"device={device}"]
        )
    except (HydraException, OmegaConfBaseException) as error:
        reason = str(error).strip().splitlines()[0]
        raise UserError(f"shards: the run in {folder} does not compose ({reason})") from None
    again = json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True)))  # as recorded
    how = {prefix.rstrip(".") for prefix in HOW}  # speed and logging: no part of the result
    differ = sorted(
        k
        for k in again.keys() | recorded.keys()
        if k not in how | {"shard"} and again.get(k) != recorded.get(k)
    )
    if differ:
        raise UserError(
            f"shards: the run in {folder} no longer composes to its recorded config (keys "
            f"{', '.join(differ)} differ): merge with the code and conf/ it ran with"
        )
    return cfg


def merge_run(
    shards: dict, out_dir: Path, device: str, evaluate: bool = True, config_name: str = "config"
) -> dict:
    """Merge one run's shards into ``out_dir``: synthetic.pt (after the method's last stage),
    and results.json with the set's accuracy (the run's protocol) and CMI (the measuring proxy),
    unless ``evaluate`` is False.
    Nothing but results.json saying ``running`` is written before the set is evaluated."""
    folder, first = shards[min(shards)]
    count = first["config"]["shard"]["count"]
    parts = _read_parts(shards, count)
    synthetic = join(parts)
    cfg = _composed(folder, first["config"], device, config_name)
    results = {
        "accuracy": {},
        "cmi": {"start": None, "end": None, "weight": first["cmi"].get("weight")},
        "iterations": first["config"]["iterations"],
        "seconds_per_iteration": max(r["seconds_per_iteration"] for _, r in shards.values()),
        "shards": [str(shards[k][0]) for k in range(count)],
        "config": OmegaConf.to_container(cfg, resolve=True),
        "manifest": first.get("manifest", {}),
        "status": "running",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "synthetic.pt").unlink(missing_ok=True)  # an earlier merge's, if any
    files.write_json(out_dir / "results.json", results)
    real, method, synthetic = _finished(cfg, synthetic)
    if evaluate:
        _evaluate(cfg, real, method, synthetic, results)
    meta = {k: parts[0].meta[k] for k in ("iteration", "seed", "dataset")}
    synthetic.cpu().save(out_dir / "synthetic.pt", **meta)
    log.info("%d shards merged into %s", count, out_dir / "synthetic.pt")
    results["status"] = "finished"
    files.write_json(out_dir / "results.json", results)
    return results


def _finished(cfg: DictConfig, synthetic: SyntheticSet) -> tuple:
    """(real data, method, set) after the method's last stage on the merged set (SRe2L's
    relabel: the teacher's views of the whole set; its teacher comes from the cache, or is
    trained there with ``teacher.build_if_missing``)."""
    batching.from_config(cfg)
    real = load_real(cfg, resolve_device(cfg.device))
    device = real.test_images.device
    method = build_method(cfg.method, real, cfg.ipc, cfg.seed, device)
    method.provide(**{kind: pretrained.get(kind, cfg, real, device) for kind in method.needs})
    synthetic = synthetic.to(device)
    method.finish(synthetic)
    return real, method, synthetic


def _evaluate(cfg: DictConfig, real, method, synthetic: SyntheticSet, results: dict) -> None:
    """The merged set's accuracy under the run's protocol and streams (those of the unsplit
    run's final evaluation), and its CMI at the start and the end under the measuring proxy."""
    evaluator = instantiate(cfg.eval)
    results["accuracy"] = evaluate_set(method, evaluator, synthetic, real, cfg.seed, cfg.iterations)
    pool = measuring_pool(cfg, real, real.test_images.device)
    if pool is not None:
        outputs = getattr(pool.first, SPACES[cfg.cmi.space])
        start = method.initial_set(real, cfg.ipc, generator(cfg.seed, "init"))
        results["cmi"]["start"] = set_cmi(outputs, *start.decoded())
        results["cmi"]["end"] = set_cmi(outputs, *synthetic.decoded())
    for arch, r in results["accuracy"].items():
        log.info("%s: accuracy %.4f ± %.4f", arch, r["mean"], r["std"])


def _run_folder(shards: dict) -> str:
    """A run's folder under ``merged/``: shard 0's job folder without its shard index."""
    name = shards[min(shards)][0].name if len(shards) else "run"
    parent = shards[min(shards)][0].parent.name
    return re.sub(r",?shard\.index=\d+,?", ",", f"{parent}/{name}").strip(",").replace(",/", "/")


def merge_all(root: Path, out_dir: Path, device: str, evaluate=True, config_name="config") -> dict:
    """Merge every run's shards under ``root``; several runs go to folders of ``out_dir``."""
    runs = find(root)
    merged = {}
    for shards in runs.values():
        to = out_dir if len(runs) == 1 else out_dir / _run_folder(shards)
        merged[str(to)] = merge_run(shards, to, device, evaluate, config_name)
    return merged


def merge(cfg: DictConfig, out_dir: Path, evaluate: bool = True) -> dict:
    """``task=merge shards=<folder>``: the shards' sets under it merged into ``out_dir``."""
    if not cfg.get("shards"):
        raise UserError("task=merge needs shards=<the folder of a run's shards>")
    return merge_all(Path(cfg.shards).expanduser(), out_dir, cfg.device, evaluate)


class MergeShards(Callback):
    """``sweep=shards``: once every shard of the sweep has run, merge them into
    ``<sweep dir>/merged`` (a missing or failed shard: one line, exit status 2). Hydra calls it
    before ``SweepErrors``, which lists the jobs that failed: then it merges nothing."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        root = Path(config.hydra.sweep.dir)
        if any(root.rglob("error.txt")):
            print("the shards were not merged: job(s) failed (below)", file=sys.stderr)
            return
        try:
            merge_all(
                root, root / "merged", config.device, config_name=config.hydra.job.config_name
            )
        except Exception as error:  # noqa: BLE001 -- a callback's exception is only a warning
            print(f"error: merging the shards: {describe(error)}", file=sys.stderr)
            raise SystemExit(2) from None
        print(f"merged set in {root / 'merged'}", file=sys.stderr)
