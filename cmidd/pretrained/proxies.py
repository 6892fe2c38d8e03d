"""The proxy pool: networks pre-trained on the real data, whose outputs the CMI term reads.

A pool is a ``Store`` in ``<cache>/proxies/<dataset>/<proxy>-<hash>/`` whose items are the
proxies' weights: proxy ``i`` depends only on (pool seed, i), so pools grow without retraining.
A run loads the pool once, into memory.
"""

import copy
import logging
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..errors import UserError, check_number
from ..progress import epoch_logger
from ..runtime import build_seeded, generator
from ..train import accuracy, train_classifier
from .kind import Kind, make_net
from .store import StoreError
from .teachers import KIND as TEACHERS

log = logging.getLogger(__name__)


class ProxyPool:
    """Frozen networks in eval mode (train mode would let BatchNorm proxies overwrite their
    running statistics with synthetic batches); one is drawn uniformly per draw."""

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


def random_pool(node: DictConfig, real, device) -> ProxyPool:
    """Untrained proxies with varying initializations (the paper's Table 7 without "PT")."""
    if node.get("from_teacher"):
        raise UserError("cmi.pretrained=false is invalid with proxy=teacher: a teacher is trained")
    check_number("proxy.pool_size", node.pool_size, 1, integer=True)
    return ProxyPool(
        [
            build_seeded(make_net(node), node.seed, f"proxy/{i}", **real.net_args).to(device)
            for i in range(node.pool_size)
        ]
    )


def _train(node: DictConfig, real, device, train_set, i: int) -> tuple:
    images, labels = train_set()
    recipe = OmegaConf.to_container(node.recipe, resolve=True)
    net = build_seeded(make_net(node), node.seed, f"proxy/{i}", **real.net_args).to(device)
    train_classifier(
        net,
        images,
        labels,
        recipe["epochs"],
        generator=generator(node.seed, f"proxy/{i}"),
        lr=recipe["lr"],
        momentum=recipe["momentum"],
        weight_decay=recipe["weight_decay"],
        batch_size=recipe["batch_size"],
        on_epoch=epoch_logger(log, f"proxy {i}", recipe["epochs"]),
    )
    test = accuracy(net, real.test_images, real.test_labels)
    log.info("proxy %d trained: test accuracy %.4f", i, test)
    return net.state_dict(), {
        "net": OmegaConf.to_container(node.net, resolve=True),
        "recipe": recipe,
        "seed": node.seed,
        "test_accuracy": test,
    }


def _load(node: DictConfig, real, device, states: list) -> ProxyPool:
    nets = []
    for state in states:
        net = make_net(node)(**real.net_args)
        net.load_state_dict(state)
        nets.append(net.to(device))
    return ProxyPool(nets)


@dataclass(frozen=True)
class ProxyKind(Kind):
    def build(self, cfg: DictConfig, real, device, store=None) -> list:
        if cfg.proxy.get("from_teacher"):
            raise UserError(
                "task=pretrain proxy=teacher is invalid: the pool is the teacher; build it "
                f"with task=teacher teacher.seed={cfg.proxy.seed}"
            )
        return super().build(cfg, real, device, store)

    def get(self, cfg: DictConfig, real, device):
        """The pool of ``proxy=...``; ``proxy=teacher``: the teacher of seed ``proxy.seed`` alone
        (``teacher=...``: SRe2L's squeeze stage), as a pool of one."""
        if not cfg.proxy.get("from_teacher"):
            return super().get(cfg, real, device)
        if cfg.proxy.pool_size != 1:  # a preset's pool size is for pools of proxies
            log.info(
                "proxy=teacher: a pool of one (proxy.pool_size=%s does not apply)",
                cfg.proxy.pool_size,
            )
        source = copy.deepcopy(cfg)
        source.teacher.seed = cfg.proxy.seed
        return ProxyPool([TEACHERS.get(source, real, device)])


KIND = ProxyKind(
    group="proxy",
    subdir="proxies",
    prefix="proxy",
    what="proxy pool",
    size="pool_size",
    task="pretrain",
    train=_train,
    load=_load,
)
