"""The proxy pool: networks pre-trained on the real data, whose outputs the CMI term reads.

A pool lives in ``<cache>/<dataset>/<proxy>-<hash>/`` where the hash covers the architecture, the
training recipe and the pool seed; proxy ``i`` is ``proxy_{i:03d}.pt`` with a JSON metadata file.
Proxy ``i`` depends only on (pool seed, i), so a pool of 10 is the first 10 of a pool of 20 and
pools grow without retraining. A run loads the pool once, into memory.
"""
import hashlib
import json
import logging
from pathlib import Path

import torch
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


def pool_dir(root, dataset: str, name: str, net_config: dict, recipe: dict, seed: int) -> Path:
    spec = json.dumps({"net": net_config, "recipe": recipe, "seed": seed}, sort_keys=True)
    digest = hashlib.sha256(spec.encode()).hexdigest()[:10]
    return Path(root).expanduser() / dataset / f"{name}-{digest}"


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
    """Train the proxies of the pool that are not in ``directory`` yet; returns their metadata."""
    directory.mkdir(parents=True, exist_ok=True)
    images, labels = real.train_tensors()
    metas = []
    for i in range(size):
        meta_path = directory / f"proxy_{i:03d}.json"
        if meta_path.exists():
            metas.append(json.loads(meta_path.read_text()))
            continue
        net = build_seeded(make_net, seed, f"proxy/{i}", **_net_args(real)).to(device)
        train_classifier(net, images, labels, recipe["epochs"], generator=generator(seed, f"proxy/{i}"),
                         lr=recipe["lr"], momentum=recipe["momentum"],
                         weight_decay=recipe["weight_decay"], batch_size=recipe["batch_size"])
        weights = directory / f"proxy_{i:03d}.pt"
        torch.save(net.state_dict(), weights)
        meta = {**real.meta, "net": net_config, "recipe": recipe, "seed": seed, "index": i,
                "test_accuracy": accuracy(net, real.test_images, real.test_labels),
                "sha256": _sha256(weights)}
        meta_path.write_text(json.dumps(meta, indent=2))
        log.info("proxy %d/%d trained: test accuracy %.4f", i + 1, size, meta["test_accuracy"])
        metas.append(meta)
    return metas


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
                            f"delete it and rebuild with: {rebuild}")
        net = make_net(**_net_args(real))
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        nets.append(net.to(device))
    return ProxyPool(nets)
