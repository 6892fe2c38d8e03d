"""The proxy pool: networks pre-trained on the real data, whose outputs the CMI term reads.

A pool lives in ``<cache>/<dataset>/<proxy>-<hash>/`` where the hash covers the architecture, the
training recipe and the pool seed; proxy ``i`` is ``proxy_{i:03d}.pt`` with a JSON metadata file.
Proxy ``i`` depends only on (pool seed, i), so a pool of 10 is the first 10 of a pool of 20 and
pools grow without retraining. A run loads the pool once, into memory.
"""
import functools
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn

from .errors import UserError
from .runtime import build_seeded, generator
from .train import accuracy, train_classifier

log = logging.getLogger(__name__)
META_KEYS = ("dataset", "num_classes", "channels", "image_size", "mean", "std")


class PoolError(UserError):
    """A missing or mismatched proxy pool; the message says how to fix it."""


class ProxyPool:
    """Frozen networks in eval mode (train mode would let BatchNorm proxies overwrite their
    running statistics with synthetic batches); one is drawn uniformly per iteration."""

    def __init__(self, nets: list):
        if not nets:
            raise PoolError("a proxy pool needs at least one network (proxy.pool_size >= 1)")
        self.nets = [net.eval().requires_grad_(False) for net in nets]

    def __len__(self) -> int:
        return len(self.nets)

    @property
    def first(self) -> nn.Module:
        return self.nets[0]

    def sample(self, gen: torch.Generator) -> nn.Module:
        return self.nets[torch.randint(len(self.nets), (1,), generator=gen).item()]


def pool_dir(root, data: dict, name: str, net_config: dict, recipe: dict, seed: int) -> Path:
    """``data`` describes the training data (RealData.meta plus the loader's settings)."""
    spec = json.dumps({"data": data, "net": net_config, "recipe": recipe, "seed": seed},
                      sort_keys=True)
    digest = hashlib.sha256(spec.encode()).hexdigest()[:10]
    return Path(root).expanduser() / data["dataset"] / f"{name}-{digest}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _net_args(real) -> dict:
    c, h, _ = real.shape
    return dict(in_channels=c, num_classes=real.num_classes, image_size=h)


def random_pool(make_net, size: int, real, seed: int, device) -> ProxyPool:
    """Untrained proxies with varying initializations (the paper's Table 7 without "PT")."""
    return ProxyPool([build_seeded(make_net, seed, f"proxy/{i}", **_net_args(real)).to(device)
                      for i in range(size)])


def build_pool(directory: Path, make_net, size: int, real, recipe: dict, seed: int, device,
               net_config: dict) -> list:
    """Train the proxies of the pool that are not in ``directory`` yet; returns their metadata.

    Safe for the jobs of a sweep sharing one cache: the build holds a file lock (a second job
    waits, then finds the proxies built), and each file is written to a temporary name and
    renamed, the metadata last, so a proxy exists only once complete.
    """
    directory.mkdir(parents=True, exist_ok=True)
    # The whole training set as one tensor, made once and only if a proxy needs training.
    train_set = functools.cache(real.train_tensors)
    with FileLock(str(directory) + ".lock"):
        return [_build_proxy(directory, i, make_net, real, train_set, recipe, seed, device,
                             net_config) for i in range(size)]


def _build_proxy(directory, i, make_net, real, train_set, recipe, seed, device, net_config):
    meta_path, weights = directory / f"proxy_{i:03d}.json", directory / f"proxy_{i:03d}.pt"
    if meta_path.exists() and _intact(meta_path, weights, real):
        return json.loads(meta_path.read_text())
    images, labels = train_set()
    net = build_seeded(make_net, seed, f"proxy/{i}", **_net_args(real)).to(device)
    train_classifier(net, images, labels, recipe["epochs"], generator=generator(seed, f"proxy/{i}"),
                     lr=recipe["lr"], momentum=recipe["momentum"],
                     weight_decay=recipe["weight_decay"], batch_size=recipe["batch_size"])
    torch.save(net.state_dict(), weights.with_suffix(".pt.tmp"))
    os.replace(weights.with_suffix(".pt.tmp"), weights)
    meta = {**real.meta, "net": net_config, "recipe": recipe, "seed": seed, "index": i,
            "test_accuracy": accuracy(net, real.test_images, real.test_labels),
            "sha256": _sha256(weights)}
    meta_path.with_suffix(".json.tmp").write_text(json.dumps(meta, indent=2))
    os.replace(meta_path.with_suffix(".json.tmp"), meta_path)
    log.info("proxy %d trained: test accuracy %.4f", i, meta["test_accuracy"])
    return meta


def _intact(meta_path: Path, weights: Path, real) -> bool:
    """Whether a stored proxy matches the run's data and its checksum (else it is rebuilt)."""
    meta = json.loads(meta_path.read_text())
    return (all(meta.get(k) == real.meta[k] for k in META_KEYS) and weights.is_file()
            and _sha256(weights) == meta.get("sha256"))


def load_pool(directory: Path, make_net, size: int, real, device, rebuild: str) -> ProxyPool:
    """Load ``size`` proxies from ``directory``, checking each against the run's data."""
    found = sorted(directory.glob("proxy_*.json")) if directory.is_dir() else []
    if len(found) < size:
        raise PoolError(f"proxy pool {directory} has {len(found)} of proxy.pool_size={size} "
                        f"proxies; build it with: {rebuild}")
    nets = []
    for i in range(size):
        meta = json.loads((directory / f"proxy_{i:03d}.json").read_text())
        for key in META_KEYS:
            if meta[key] != real.meta[key]:
                raise PoolError(f"proxy pool {directory} was built for {key}={meta[key]}, this run "
                                f"has {key}={real.meta[key]}; build a matching pool with: {rebuild}")
        weights = directory / f"proxy_{i:03d}.pt"
        if not weights.is_file() or _sha256(weights) != meta["sha256"]:
            raise PoolError(f"proxy file {weights} is missing or corrupt (checksum mismatch); "
                            f"rebuild it with: {rebuild}")
        net = make_net(**_net_args(real))
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        nets.append(net.to(device))
    return ProxyPool(nets)
