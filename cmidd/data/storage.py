"""Where a run's real images live (``dataset.storage``).

- ``memory``: float32 tensors on the run's device, normalized once (fast; the data must fit).
- ``disk``: uint8 arrays decoded once into ``<data_root>/decoded/<dataset>-<hash>/`` (one
  ``.npy`` file per split, class-contiguous, with the class index and sha256 checksums in
  ``index.json``), memory-mapped and converted to normalized float on the device per batch.
  The conversion is the memory path's, element by element, so both give the same run.
- ``stream``: the image files decoded per batch by DataLoader workers (``cmidd.data.stream``), for
  data too large even for the uint8 cache.
- ``auto``: memory when the float32 tensors fit ``dataset.memory_budget_gb``, else disk when the
  uint8 cache fits ``dataset.disk_budget_gb`` and the free space, else stream.

Every consumer of real data indexes it (``images[index]``, ``images[a:b]``, ``len``), which
tensors, ``DiskImages`` and ``StreamImages`` all serve.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from torch.utils.data import DataLoader, Subset

from ..errors import UserError
from .real import RealData, normalize

log = logging.getLogger(__name__)


class DiskImages:
    """Normalized float images read on demand from a uint8 array [n, C, H, W]."""

    def __init__(self, array: np.ndarray, mean, std, device):
        self.array, self.device, self.mean, self.std = array, torch.device(device), mean, std

    def __len__(self) -> int:
        return len(self.array)

    @property
    def shape(self) -> tuple:
        return torch.Size(self.array.shape)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        if not isinstance(index, slice | np.ndarray):
            raise TypeError("DiskImages take a slice or an index tensor")
        rows = torch.from_numpy(np.array(self.array[index])).to(self.device)  # a private copy
        return normalize(rows.float().div_(255), self.mean, self.std)


def targets_of(dataset) -> np.ndarray:
    for key in ("targets", "labels"):
        if hasattr(dataset, key):
            return np.asarray(getattr(dataset, key), dtype=np.int64)
    raise TypeError(f"{type(dataset).__name__} has no targets to sort its images by class")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _write(path: Path, dataset, workers: int) -> None:
    """Decode ``dataset`` (uint8 CHW tensors) in order into a ``.npy`` file, batch by batch."""
    shape = tuple(dataset[0][0].shape)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(dataset), *shape))
    start = 0
    for images, _ in DataLoader(dataset, batch_size=512, num_workers=workers):
        array[start : start + len(images)] = images.numpy()
        start += len(images)
    array.flush()
    del array


def channel_stats(array: np.ndarray, chunk: int = 4096) -> tuple:
    """Per-channel mean and (unbiased) std of uint8 images [n, C, H, W] scaled to [0, 1]."""
    sums, squares = np.zeros(array.shape[1]), np.zeros(array.shape[1])
    for start in range(0, len(array), chunk):
        x = np.asarray(array[start : start + chunk], dtype=np.float64) / 255
        sums += x.sum(axis=(0, 2, 3))
        squares += (x * x).sum(axis=(0, 2, 3))
    n = len(array) * array.shape[2] * array.shape[3]
    mean = sums / n
    std = np.sqrt((squares - n * mean * mean) / (n - 1))
    return mean.tolist(), std.tolist()


class Storage:
    """Turns a loader's uint8 splits into ``RealData`` held as ``mode`` says."""

    MODES = ("auto", "memory", "disk", "stream")

    def __init__(self, mode, memory_budget_gb, folder, workers=2, disk_budget_gb=float("inf")):
        """``workers``: processes that decode images (torch DataLoader workers)."""
        if mode not in self.MODES:
            raise UserError(f"dataset.storage={mode} is not one of {', '.join(self.MODES)}")
        self.mode, self.budget = mode, float(memory_budget_gb)
        self.disk_budget = float(disk_budget_gb)
        self.folder = Path(folder) if folder is not None else None
        self.workers = workers

    def choose(self, root, train, test) -> str:
        """``memory``, ``disk`` or ``stream`` for splits of uint8 images: memory when their
        float32 size fits the memory budget, else disk when their uint8 size fits the disk
        budget and the free space (or is decoded already), else stream."""
        shape = tuple(train[0][0].shape)
        gigabytes = (len(train) + len(test)) * int(np.prod(shape)) * 4 / 1e9
        fits = gigabytes <= self.budget
        if self.mode == "memory" and not fits:
            raise UserError(
                f"dataset.memory_budget_gb={self.budget:g}: {root} at {shape} needs "
                f"{gigabytes:.3g} GB as float tensors; use dataset.storage=disk (or auto)"
            )
        room = min(self.disk_budget, self._free_gb())
        if self.mode == "disk" and gigabytes / 4 > room:
            raise UserError(
                f"dataset.storage=disk: {root} at {shape} needs {gigabytes / 4:.3g} GB decoded, "
                f"{self.folder.parent} has room for {room:.3g} GB; use dataset.storage=stream"
            )
        chosen = self.mode
        if self.mode == "auto":
            chosen = "memory" if fits else "disk" if gigabytes / 4 <= room else "stream"
        log.info(
            "data: %s at %s, %.3g GB as float32 (budget %g GB), %.3g GB as uint8 (room %.3g "
            "GB): storage %s%s", root, shape, gigabytes, self.budget, gigabytes / 4, room,
            chosen, " (auto)" if self.mode == "auto" else "",
        )  # fmt: skip
        return chosen

    def _free_gb(self) -> float:
        """Room for the decoded cache: unlimited once it exists, else the free disk space."""
        if self.folder is None or (self.folder / "index.json").is_file():
            return float("inf")
        place = self.folder
        while not place.exists():
            place = place.parent
        return shutil.disk_usage(place).free / 1e9

    def decoded(self, train, test, classes) -> Path:
        """The decoded cache folder, built once (atomically: a half-built one is never used; the
        jobs of a sweep that start together wait for the one that builds it)."""
        if (self.folder / "index.json").is_file():
            return self.folder
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.folder) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting for another run that is decoding %s", self.folder)
            lock.acquire()
        try:
            if not (self.folder / "index.json").is_file():
                self._build(train, test, classes)
        finally:
            lock.release()
        return self.folder

    def _build(self, train, test, classes) -> None:
        staging = Path(tempfile.mkdtemp(dir=self.folder.parent, prefix=f".{self.folder.name}-"))
        try:
            started = time.perf_counter()
            order = np.argsort(targets_of(train), kind="stable")  # each class contiguous
            _write(staging / "train.npy", Subset(train, order.tolist()), self.workers)
            _write(staging / "test.npy", test, self.workers)
            np.save(staging / "test_labels.npy", targets_of(test))
            counts = np.bincount(targets_of(train), minlength=len(classes)).tolist()
            files = ("train.npy", "test.npy", "test_labels.npy")
            index = {"classes": list(classes), "counts": counts}
            index["sha256"] = {f: _sha256(staging / f) for f in files}
            (staging / "index.json").write_text(json.dumps(index, indent=1))
            os.replace(staging, self.folder)
        except BaseException:  # a failed build leaves nothing behind
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("decoded to %s in %.0f s", self.folder, time.perf_counter() - started)

    def open(self, name: str, mean, std, device):
        """The decoded cache as memory-mapped ``RealData`` (checksums verified first); mean and
        std default to the training set's (in float64, so equal to memory's up to rounding)."""
        index = json.loads((self.folder / "index.json").read_text())
        started = time.perf_counter()
        for file, digest in index["sha256"].items():
            if _sha256(self.folder / file) != digest:
                raise UserError(
                    f"{self.folder / file} does not match its checksum in index.json; "
                    f"delete {self.folder} to decode the data again"
                )
        log.info("verified %s in %.1f s", self.folder, time.perf_counter() - started)
        train = np.load(self.folder / "train.npy", mmap_mode="r")
        if mean is None or std is None:
            mean, std = channel_stats(train)
        ends = np.cumsum(index["counts"]).tolist()
        starts = [0, *ends[:-1]]
        return RealData(
            name=name,
            train=[
                DiskImages(train[a:b], mean, std, device) for a, b in zip(starts, ends, strict=True)
            ],
            test_images=DiskImages(
                np.load(self.folder / "test.npy", mmap_mode="r"), mean, std, device
            ),
            test_labels=torch.from_numpy(np.load(self.folder / "test_labels.npy")).to(device),
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
            class_names=index["classes"],
            train_all=DiskImages(train, mean, std, device),
        )
