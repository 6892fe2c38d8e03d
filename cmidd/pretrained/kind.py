"""What every kind of cached pre-trained network shares: where its store lives (named by the
group's ``cache_key`` and the loaded data's facts), the command that builds it, and building or
loading it through the checksummed ``Store``."""

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..errors import check_number
from ..overrides import command, used
from .store import Store, store_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kind:
    """One kind of cached network: its config group (``proxy``, ``expert``...), the sub-directory
    of ``cache_dir``, the item file prefix, what it is called in messages, the key of its size,
    the task that builds it, and two functions:

    - ``train(node, real, device, train_set, i)``: item ``i`` as (payload to save, extra
      metadata); ``train_set()`` returns the real training tensors (made once);
    - ``load(node, real, device, payloads)``: the run's object from the loaded payloads.
    """

    group: str
    subdir: str
    prefix: str
    what: str
    size: str
    task: str
    train: Callable
    load: Callable

    def size_key(self) -> str:
        return f"{self.group}.{self.size}"

    def location(self, cfg: DictConfig, real) -> Path:
        key = OmegaConf.to_container(cfg[self.group].cache_key, resolve=True)
        data = {**real.meta, "loader": key.pop("loader")}
        return store_dir(Path(cfg.cache_dir) / self.subdir, data, cfg[self.group].name, key)

    def rebuild_command(self, cfg: DictConfig) -> str:
        """The command that builds this run's store: the run's own overrides (whatever decides
        the cache key among them), with this kind's task."""
        overrides = used()  # a resumed run's included
        if overrides is None:  # composed outside a Hydra app (tests, notebooks)
            groups = ("dataset", self.group, "method")
            overrides = [f"{group}={cfg[group].name}" for group in groups] + [f"ipc={cfg.ipc}"]
        own = (f"{self.group}.build_if_missing", self.size_key(), f"{self.group}.seed")
        kept = [o for o in overrides if not o.startswith(own)]
        size, seed = OmegaConf.select(cfg, self.size_key()), cfg[self.group].seed
        seeded = [] if seed == 0 else [f"{self.group}.seed={seed}"]  # 0: the default
        return command(self.task, kept, f"{self.size_key()}={size}", *seeded)

    def store(self, cfg: DictConfig, real) -> Store:
        return Store(
            self.location(cfg, real),
            self.prefix,
            self.what,
            self.size_key(),
            self.rebuild_command(cfg),
        )

    def check(self, node: DictConfig) -> None:
        """The group's size and training recipe, before anything is trained or loaded."""
        check_number(self.size_key(), node[self.size], 1, integer=True)
        for name in ("epochs", "batch_size"):
            check_number(f"{self.group}.recipe.{name}", node.recipe[name], 1, integer=True)

    def build(self, cfg: DictConfig, real, device, store: Store = None) -> list:
        """Train the items missing from the store; returns every item's metadata."""
        node = cfg[self.group]
        self.check(node)
        store = store or self.store(cfg, real)
        train_set = functools.cache(real.train_tensors)  # made once, only if an item trains
        log.info("%s: %d %s in %s", self.what, node[self.size], node.name, store.directory)
        return store.build(
            node[self.size], real.meta, lambda i: self.train(node, real, device, train_set, i)
        )

    def get(self, cfg: DictConfig, real, device):
        """The run's object, loaded once; built first when missing if the group's
        ``build_if_missing`` (else a missing store names the command that builds it)."""
        node = cfg[self.group]
        self.check(node)
        store = self.store(cfg, real)
        if node.build_if_missing:
            self.build(cfg, real, device, store)  # checksums each item once, for the load too
        items = store.load(node[self.size], real.meta, mmap=True)
        return self.load(node, real, device, [payload for payload, _ in items])


def make_net(node: DictConfig):
    """The group's network factory (``net``, a partial)."""
    return instantiate(node.net)
