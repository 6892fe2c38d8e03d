"""The proxy pool: networks pre-trained on the real data, whose outputs the CMI term reads.

A pool is a ``Store`` (cmidd.store) in ``<cache>/proxies/<dataset>/<proxy>-<hash>/`` whose items
are the proxies' weights: proxy ``i`` depends only on (pool seed, i), so pools grow without
retraining. A run loads the pool once, into memory.
"""
import functools
import logging
from pathlib import Path

import torch
from torch import nn

from .progress import epoch_logger
from .runtime import build_seeded, generator
from .store import Store, StoreError
from .train import accuracy, train_classifier

log = logging.getLogger(__name__)


class ProxyPool:
    """Frozen networks in eval mode (train mode would let BatchNorm proxies overwrite their
    running statistics with synthetic batches); one is drawn uniformly per iteration."""

    def __init__(self, nets: list):
        if not nets:
            raise StoreError("a proxy pool needs at least one network (proxy.pool_size >= 1)")
        self.nets = [net.eval().requires_grad_(False) for net in nets]

    def __len__(self) -> int:
        return len(self.nets)

    @property
    def first(self) -> nn.Module:
        return self.nets[0]

    def sample(self, gen: torch.Generator) -> nn.Module:
        return self.nets[torch.randint(len(self.nets), (1,), generator=gen).item()]


def net_args(real) -> dict:
    c, h, _ = real.shape
    return dict(in_channels=c, num_classes=real.num_classes, image_size=h)


def random_pool(make_net, size: int, real, seed: int, device) -> ProxyPool:
    """Untrained proxies with varying initializations (the paper's Table 7 without "PT")."""
    return ProxyPool([build_seeded(make_net, seed, f"proxy/{i}", **net_args(real)).to(device)
                      for i in range(size)])


def _store(directory: Path, rebuild: str = "") -> Store:
    return Store(directory, "proxy", "proxy pool", "proxy.pool_size", rebuild)


def build_pool(directory: Path, make_net, size: int, real, recipe: dict, seed: int, device,
               net_config: dict) -> list:
    """Train the proxies of the pool that are not in ``directory`` yet; returns their metadata."""
    train_set = functools.cache(real.train_tensors)  # made once, only if a proxy needs training

    def make(i):
        images, labels = train_set()
        net = build_seeded(make_net, seed, f"proxy/{i}", **net_args(real)).to(device)
        train_classifier(net, images, labels, recipe["epochs"],
                         generator=generator(seed, f"proxy/{i}"), lr=recipe["lr"],
                         momentum=recipe["momentum"], weight_decay=recipe["weight_decay"],
                         batch_size=recipe["batch_size"],
                         on_epoch=epoch_logger(log, f"proxy {i}", recipe["epochs"]))
        test = accuracy(net, real.test_images, real.test_labels)
        log.info("proxy %d trained: test accuracy %.4f", i, test)
        return net.state_dict(), {"net": net_config, "recipe": recipe, "seed": seed,
                                  "test_accuracy": test}

    return _store(directory).build(size, real.meta, make)


def load_pool(directory: Path, make_net, size: int, real, device, rebuild: str) -> ProxyPool:
    """Load ``size`` proxies from ``directory``, checking each against the run's data."""
    nets = []
    for state, _ in _store(directory, rebuild).load(size, real.meta):
        net = make_net(**net_args(real))
        net.load_state_dict(state)
        nets.append(net.to(device))
    return ProxyPool(nets)
