"""``task=merge``: the shards of a class-sharded run (cmidd/shards.py) joined into one
``synthetic.pt``, evaluated with the run's protocol and streams and measured under its measuring
proxy; also run by ``sweep=shards`` once its jobs have finished (``MergeShards``)."""

import json
import logging
import re
import sys
from pathlib import Path

import torch
import yaml
from hydra import compose
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from . import files, overrides
from .cmi import SPACES, set_cmi
from .components import load_real, measuring_pool
from .errors import UserError, describe
from .neutral import HOW
from .runtime import resolve_device
from .shards import SET
from .synthetic import SyntheticSet

log = logging.getLogger(__name__)


def _without_shard(config: dict) -> str:
    """What must be equal across the shards of one run: the config but its shard index."""
    rest = {k: v for k, v in config.items() if k != "shard"}
    return json.dumps(rest | {"shard_count": config["shard"]["count"]}, sort_keys=True)


def find(root: Path) -> dict:
    """The shards under ``root``, by run: {run key: {index: (directory, results)}}."""
    runs = {}
    for path in sorted(root.rglob("results.json")):
        results = json.loads(path.read_text())
        shard = results.get("config", {}).get("shard") or {}
        if shard.get("count", 1) > 1:
            run = runs.setdefault(_without_shard(results["config"]), {})
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
    """One set from the shards' sets, class by class."""
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
    cfg = compose(config_name=config_name, overrides=[*kept, "shard.count=1", f"device={device}"])
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
    """Merge one run's shards into ``out_dir``: synthetic.pt, and results.json with the set's
    accuracy (the run's protocol) and CMI (the measuring proxy), unless ``evaluate`` is False."""
    folder, first = shards[min(shards)]
    count = first["config"]["shard"]["count"]
    parts = _read_parts(shards, count)
    synthetic = join(parts)
    cfg = _composed(folder, first["config"], device, config_name)
    results = {
        "accuracy": {},
        "cmi": {"end": None},
        "iterations": first["config"]["iterations"],
        "seconds_per_iteration": max(r["seconds_per_iteration"] for _, r in shards.values()),
        "shards": [str(shards[k][0]) for k in range(count)],
        "config": OmegaConf.to_container(cfg, resolve=True),
        "status": "running",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {k: parts[0].meta[k] for k in ("iteration", "seed", "dataset")}
    synthetic.save(out_dir / "synthetic.pt", **meta)
    log.info("%d shards merged into %s", count, out_dir / "synthetic.pt")
    if evaluate:
        real = load_real(cfg, resolve_device(device))
        synthetic = synthetic.to(real.test_images.device)
        images, labels = synthetic.train_set()
        results["accuracy"] = instantiate(cfg.eval)(
            images, labels, real, cfg.seed, stream=f"eval/{cfg.iterations}", lr=synthetic.learned_lr
        )
        pool = measuring_pool(cfg, real, real.test_images.device)
        if pool is not None:
            outputs = getattr(pool.first, SPACES[cfg.cmi.space])
            results["cmi"]["end"] = set_cmi(outputs, *synthetic.decoded())
        for arch, r in results["accuracy"].items():
            log.info("%s: accuracy %.4f ± %.4f", arch, r["mean"], r["std"])
    results["status"] = "finished"
    files.write_json(out_dir / "results.json", results)
    return results


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
    ``<sweep dir>/merged`` (a missing or failed shard: one line, exit status 2)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        root = Path(config.hydra.sweep.dir)
        try:
            merge_all(
                root, root / "merged", config.device, config_name=config.hydra.job.config_name
            )
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        print(f"merged set in {root / 'merged'}", file=sys.stderr)
