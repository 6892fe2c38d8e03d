"""The on-disk layouts of the paper's large datasets, read with torchvision's folder datasets.

- TinyImageNet (Table 3): ``wnids.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG``
  with ``val/val_annotations.txt`` (file, wnid, box per line); the val split is the test set.
- ImageNet-1K (ILSVRC-2012, Table 4): ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``, the
  layout torchvision's ``ImageFolder`` (and its ``ImageNet`` after ``parse_val_archive``) expects.

Each layout problem (a missing file, an empty class folder, class sets that differ between the
splits) is a one-line ``UserError`` naming the path. Images are resized by the loader's
``transform`` (config) and held as ``dataset.storage`` says (``cmidd.data.storage``). Classes are
numbered in sorted wnid order, torchvision's convention.
"""

from pathlib import Path

from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

from ..errors import UserError
from .loaders import load_torchvision


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise UserError(f"dataset.loader.root: {path} does not exist ({what})")
    return path


def _folder(root: Path, classes: list, transform) -> ImageFolder:
    """``root/<class>/**`` for exactly ``classes``; an empty or missing class folder, or a class
    folder not in ``classes``, is an error naming it."""
    found = sorted(p.name for p in _require(root, "a split folder").iterdir() if p.is_dir())
    if found != sorted(classes):
        extra, missing = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
        raise UserError(
            f"dataset.loader.root: the class folders of {root} differ from the dataset's "
            f"classes (not expected: {extra[:3]}, missing: {missing[:3]})"
        )
    for name in classes:
        if not any(p.suffix.lower() in IMG_EXTENSIONS for p in (root / name).rglob("*")):
            raise UserError(f"dataset.loader.root: the class folder {root / name} has no images")
    return ImageFolder(str(root), transform=transform)


class TinyImageNetVal(Dataset):
    """TinyImageNet's labelled val split: ``val/images`` labelled by ``val_annotations.txt``."""

    def __init__(self, root: Path, classes: list, transform):
        notes = _require(root / "val_annotations.txt", "TinyImageNet's val labels")
        index = {wnid: i for i, wnid in enumerate(classes)}
        self.items, self.transform = [], transform
        for number, line in enumerate(notes.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise UserError(
                    f"dataset.loader.root: {notes} line {number} names no class of wnids.txt: "
                    f"{line[:60]!r}"
                )
            self.items.append(
                (_require(root / "images" / fields[0], "a val image"), index[fields[1]])
            )
        if not self.items:
            raise UserError(f"dataset.loader.root: {notes} lists no images")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def targets(self) -> list:
        return [label for _, label in self.items]

    def __getitem__(self, i: int) -> tuple:
        path, label = self.items[i]
        return self.transform(default_loader(str(path))), label


def load_tinyimagenet(name: str, root: str, device, transform, storage=None, **stats):
    """TinyImageNet's train and val splits (the val split is the test set); ``stats``: the
    normalization's mean and std."""
    root = Path(root).expanduser()
    wnids = _require(root / "wnids.txt", "TinyImageNet's class list").read_text().split()
    train = _folder(root / "train", wnids, transform)
    val = _require(root / "val", "TinyImageNet's val folder")
    test = TinyImageNetVal(val, train.classes, transform)
    return load_torchvision(name, train, test, device, storage=storage, where=root, **stats)


def load_imagenet(name: str, root: str, device, transform, storage=None, **stats):
    """ImageNet's train and val splits in ImageFolder layout, resized by ``transform``."""
    root = Path(root).expanduser()
    train_dir = _require(root / "train", "the train folder")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"dataset.loader.root: {train_dir} has no class folders")
    train = _folder(train_dir, classes, transform)
    test = _folder(root / "val", classes, transform)
    return load_torchvision(name, train, test, device, storage=storage, where=root, **stats)
