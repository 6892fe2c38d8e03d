"""Caches of networks trained on the real data (proxy pools, expert trajectories).

A store lives in ``<root>/<dataset>/<name>-<hash>/``, where the hash covers everything that
decides its contents (the data, the architecture, the training recipe, the seed). Item ``i`` is
``<prefix>_{i:03d}.pt`` beside ``<prefix>_{i:03d}.json``, its metadata: the data it was trained
on, its checksum and what training measured. Item ``i`` depends only on (seed, i), so a store of
10 is the first 10 of a store of 20 and grows without retraining.

Safe for the jobs of a sweep sharing one cache: building holds a file lock (a second job waits,
then finds the items built), and each file is written to a temporary name and renamed, the
metadata last, so an item exists only once complete. A complete store is only read: a shared,
read-only cache serves every run.
"""

import hashlib
import json
import logging
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from ..errors import UserError, describe
from ..files import save, write_json
from ..progress import Progress

log = logging.getLogger(__name__)
# What an item must agree on with the run's data.
META_KEYS = ("dataset", "num_classes", "channels", "image_size", "mean", "std", "zca")


class StoreError(UserError):
    """A missing or mismatched cached item; the message names the command that builds it."""


def store_dir(root, data: dict, name: str, spec: dict) -> Path:
    """``data`` describes the training data (RealData.meta plus the loader's settings); ``spec``
    everything else that decides the items (the group's ``cache_key``: net, recipe, seed)."""
    digest = hashlib.sha256(json.dumps({"data": data, **spec}, sort_keys=True).encode())
    return Path(root).expanduser() / data["dataset"] / f"{name}-{digest.hexdigest()[:10]}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


class Store:
    """``what`` names the store in messages ("proxy pool"), ``size_key`` the config key of its
    size, ``rebuild`` the command that builds it."""

    def __init__(self, directory: Path, prefix: str, what: str, size_key: str, rebuild: str = ""):
        self.directory, self.prefix, self.what = Path(directory), prefix, what
        self.size_key, self.rebuild = size_key, rebuild
        self.verified = set()  # items checksummed by this store already (a buffer is gigabytes)

    def paths(self, i: int) -> tuple:
        stem = self.directory / f"{self.prefix}_{i:03d}"
        return stem.with_suffix(".json"), stem.with_suffix(".pt")

    def build(self, size: int, real_meta: dict, make) -> list:
        """Make the items of ``range(size)`` that are missing or broken; ``make(i)`` returns
        (what to save, extra metadata). Returns every item's metadata. A complete store is only
        read (no lock taken, nothing written), so a shared cache may be read-only."""
        if self.directory.is_dir() and not any(self._problem(i, real_meta) for i in range(size)):
            return [self._meta(i) for i in range(size)]
        self.directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.directory) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info(
                "waiting for another run that is building the %s %s (lock %s)",
                self.what,
                self.directory,
                lock.lock_file,
            )
            lock.acquire()
        try:
            broken = {i: self._problem(i, real_meta) for i in range(size)}
            todo = [i for i in range(size) if broken[i]]
            progress = Progress(len(todo), unit=self.prefix)
            metas = []
            for i in range(size):
                if broken[i] is None:
                    metas.append(self._meta(i))
                    continue
                if broken[i] != "missing":
                    log.warning(
                        "%s item %s is %s: rebuilding it", self.what, self.paths(i)[1], broken[i]
                    )
                metas.append(self._build_one(i, real_meta, make))
                progress.log(log, todo.index(i) + 1, "%s: %s %d built", self.what, self.prefix, i)
            return metas
        finally:
            lock.release()

    def _meta(self, i: int) -> dict:
        return json.loads(self.paths(i)[0].read_text())

    def _problem(self, i: int, real_meta: dict):
        """What is wrong with item ``i`` (``missing``, unreadable metadata, other data, a
        checksum mismatch), or None when it is sound (it is then checksummed already)."""
        meta_path, data_path = self.paths(i)
        if not meta_path.exists() and not data_path.exists():
            return "missing"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as error:
            return f"unusable (metadata {meta_path.name}: {describe(error)})"
        differing = [k for k in META_KEYS if meta.get(k) != real_meta.get(k)]
        if differing:
            return f"from other data ({differing[0]}={meta.get(differing[0])})"
        if not data_path.is_file():
            return f"unusable ({data_path.name} is missing)"
        if i not in self.verified and _sha256(data_path) != meta.get("sha256"):
            return "corrupt (checksum mismatch)"
        self.verified.add(i)
        return None

    def _build_one(self, i: int, real_meta: dict, make) -> dict:
        meta_path, data_path = self.paths(i)
        payload, extra = make(i)
        save(payload, data_path)
        meta = {**real_meta, **extra, "index": i, "sha256": _sha256(data_path)}
        write_json(meta_path, meta)
        self.verified.add(i)
        return meta

    def load(self, size: int, real_meta: dict, mmap: bool = False) -> list:
        """(payload, metadata) of items ``range(size)``, each checked against the run's data
        and its checksum; tensors stay on the CPU (memory-mapped with ``mmap``)."""
        found = (
            sorted(self.directory.glob(f"{self.prefix}_*.json")) if self.directory.is_dir() else []
        )
        if len(found) < size:
            raise StoreError(
                f"{self.what} {self.directory} has {len(found)} of "
                f"{self.size_key}={size}; build it with: {self.rebuild}"
            )
        items = []
        for i in range(size):
            meta_path, data_path = self.paths(i)
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError) as error:
                raise StoreError(
                    f"{self.what} file {meta_path} is unusable ({describe(error)}); "
                    f"rebuild it with: {self.rebuild}"
                ) from None
            for key in META_KEYS:
                if meta.get(key) != real_meta.get(key):
                    raise StoreError(
                        f"{self.what} {self.directory} was built for {key}="
                        f"{meta.get(key)}, this run has {key}={real_meta.get(key)}; "
                        f"build a matching one with: {self.rebuild}"
                    )
            if i not in self.verified and (
                not data_path.is_file() or _sha256(data_path) != meta["sha256"]
            ):
                raise StoreError(
                    f"{self.what} file {data_path} is missing or corrupt (checksum "
                    f"mismatch); rebuild it with: {self.rebuild}"
                )
            items.append(
                (torch.load(data_path, map_location="cpu", weights_only=True, mmap=mmap), meta)
            )
        return items
