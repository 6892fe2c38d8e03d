"""Real datasets, loaded once into per-class images on the run's device or on disk.

Every loader returns a ``RealData``: normalized training images split by class, the normalized
test set, and the normalization statistics. Which torchvision dataset class to read is the
config's ``_target_``; this module turns a dataset of uint8 images into what ``storage``
(``cmidd.data.storage``, ``dataset.storage``) holds: float tensors, or memory-mapped uint8 arrays.
"""

import os
import tarfile
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..errors import UserError
from ..files import save
from .real import RealData, from_tensors
from .storage import Storage, targets_of
from .stream import stream


def _to_uint8(dataset, workers: int = 2) -> tuple:
    """Stack a dataset of (uint8 tensor image, label) items into one uint8 tensor and labels."""
    loader = DataLoader(dataset, batch_size=1000, num_workers=min(workers, os.cpu_count() or 1))
    xs, ys = zip(*loader, strict=True)
    return torch.cat(xs), torch.cat(ys).long()


def _from_uint8(name, train, test, mean, std, device, class_names) -> RealData:
    (train_x, train_y), (test_x, test_y) = train, test
    return from_tensors(
        name,
        train_x.float().div_(255),
        train_y,
        test_x.float().div_(255),
        test_y,
        mean,
        std,
        device,
        class_names,
    )


def load_torchvision(
    name: str,
    train,
    test,
    device,
    mean=None,
    std=None,
    storage: Storage = None,
    classes=None,
    where=None,
    decoded=None,
) -> RealData:
    """``train``/``test`` are torchvision datasets (built from config) yielding uint8 tensors;
    ``storage`` holds them in memory (the default) or on disk; ``where``: the data's place, for
    messages; ``decoded()``: the splits as uint8 tensors, faster than decoding them, if cached."""
    storage = storage or Storage("memory", float("inf"), None)
    classes = classes or getattr(train, "classes", None)
    chosen = storage.choose(where or getattr(train, "root", name), train, test)
    if chosen == "memory":
        if decoded is not None:
            splits = decoded()
            return _from_uint8(name, splits["train"], splits["test"], mean, std, device, classes)
        train, test = (_to_uint8(split, storage.workers) for split in (train, test))
        return _from_uint8(name, train, test, mean, std, device, classes)
    classes = classes or sorted(set(targets_of(train).tolist()))
    if chosen == "stream":
        if mean is None or std is None:
            raise UserError(
                f"dataset.storage=stream: {where or name} needs dataset.loader.mean and .std "
                "(the training set's statistics would take a pass over every file)"
            )
        return stream(name, train, test, mean, std, device, storage.workers, classes)
    storage.decoded(train, test, classes)
    return storage.open(name, mean, std, device)


def load_digits(
    name: str,
    device,
    test_fraction: float = 0.3,
    split_seed: int = 0,
    mean=None,
    std=None,
    storage: Storage = None,
) -> RealData:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images), with a fixed stratified
    split; always in memory (its 16 grey levels are not uint8 pixels)."""
    if storage is not None and storage.mode in ("disk", "stream"):
        raise UserError(
            f"dataset.storage={storage.mode}: dataset=digits is held in memory (0.5 MB)"
        )
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target)
    index = torch.arange(len(labels))
    train_i, test_i = train_test_split(
        index.numpy(), test_size=test_fraction, random_state=split_seed, stratify=labels.numpy()
    )
    return from_tensors(
        name,
        images[train_i],
        labels[train_i],
        images[test_i],
        labels[test_i],
        mean,
        std,
        device,
        [str(c) for c in bunch.target_names],
    )


def unpack_once(archive: str, target: str) -> Path:
    """Unpack ``archive`` into ``target`` unless done before; atomic, so an interrupted unpack
    is redone rather than used half-finished."""
    target = Path(target).expanduser()
    if target.is_dir():
        return target
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise FileNotFoundError(f"dataset archive {archive} does not exist")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    with tarfile.open(archive) as tar:
        tar.extractall(staging, filter="data")
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        if not target.is_dir():
            raise
    return target


def _decoded_once(root: Path) -> dict:
    """The ImageFolder splits of ``root`` as uint8 tensors, decoded from JPEG/PNG once and kept
    beside ``root`` (decoding CIFAR-10's 60,000 JPEGs takes minutes; reading the tensors, a
    second)."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import PILToTensor

    cache = root.with_name(f".{root.name}.uint8.pt")
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    splits = {
        split: ImageFolder(str(root / split), transform=PILToTensor())
        for split in ("train", "test")
    }
    decoded = {split: _to_uint8(data) for split, data in splits.items()}
    decoded["classes"] = splits["train"].classes
    save(decoded, cache)
    return decoded


def load_imagefolder(
    name: str, root: str, device, archive: str = None, mean=None, std=None, storage=None
) -> RealData:
    """``root/train`` and ``root/test`` in ImageFolder layout (custom data); with ``archive``,
    ``root`` is first unpacked from it (once) and its decoded tensors are cached."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import PILToTensor

    root = unpack_once(archive, root) if archive else Path(root).expanduser()
    train, test = (
        ImageFolder(str(root / split), transform=PILToTensor()) for split in ("train", "test")
    )
    cached = (lambda: _decoded_once(root)) if archive else None
    return load_torchvision(name, train, test, device, mean, std, storage, None, root, cached)
