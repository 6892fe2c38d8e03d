"""``RealData``: a dataset as every run reads it, whatever holds its images (``storage``).

Training images split by class, the test set, the normalization (or ZCA whitening) statistics;
images indexed as ``images[index]``, ``images[a:b]`` and ``len(images)``, which float tensors in
memory, ``DiskImages`` (``storage``) and ``StreamImages`` (``stream``) all serve.
"""

import dataclasses
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from ..runtime import derive_seed


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Pixels in [0, 1] to normalized images: the one conversion of both storages, so that they
    give the same numbers."""
    view = (1, -1, 1, 1)
    mean = torch.tensor(mean, device=images.device).view(view)
    return (images - mean) / torch.tensor(std, device=images.device).view(view)


@dataclass
class RealData:
    name: str
    train: list = field(repr=False)  # per class: float [n_c, C, H, W], normalized, on the device
    test_images: torch.Tensor = field(repr=False)
    test_labels: torch.Tensor = field(repr=False)
    mean: tuple = ()
    std: tuple = ()
    class_names: list = ()
    whitening: object = field(
        default=None, repr=False
    )  # a fitted ZCA (cmidd.data.whitening), or None
    zca_eps: float = None
    train_all: object = field(default=None, repr=False)  # disk storage: every class, in order
    val_images: object = field(default=None, repr=False)  # the validation split (split_validation)
    val_labels: torch.Tensor = field(default=None, repr=False)
    val: dict = None  # {"per_class", "seed"} of the validation split, or None

    @property
    def num_classes(self) -> int:
        return len(self.train)

    @property
    def shape(self) -> tuple:
        """(C, H, W) of one image."""
        return tuple(self.train[0].shape[1:])

    @property
    def net_args(self) -> dict:
        """What a network for these data is built with (cmidd/nets)."""
        c, h, _ = self.shape
        return dict(in_channels=c, num_classes=self.num_classes, image_size=h)

    @property
    def meta(self) -> dict:
        """What a proxy or a saved synthetic set must agree with."""
        c, h, _ = self.shape
        meta = {
            "dataset": self.name,
            "num_classes": self.num_classes,
            "channels": c,
            "image_size": h,
            "mean": [round(m, 6) for m in self.mean],
            "std": [round(s, 6) for s in self.std],
        }
        # Only whitened data and data with a validation split carry the key, so that the caches
        # of the others keep their names.
        meta |= {} if self.whitening is None else {"zca": self.zca_eps}
        return meta if self.val is None else {**meta, "val": self.val}

    def sample(self, label: int, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` distinct random images of one class (all of them if the class has fewer)."""
        images = self.train[label]
        index = torch.randperm(len(images), generator=generator)[:n]
        return images[index.to(images.device)]

    def sample_mixed(self, n: int, generator: torch.Generator) -> tuple:
        """``n`` distinct random training images drawn over all classes, and their labels."""
        sizes = torch.tensor([len(x) for x in self.train])
        ends = sizes.cumsum(0)
        index = torch.randperm(int(ends[-1]), generator=generator)[:n]
        labels = torch.searchsorted(ends, index, right=True)
        within = index - (ends - sizes)[labels]
        classes = labels.unique().tolist()
        images = torch.cat(
            [self.train[c][within[labels == c].to(self.train[c].device)] for c in classes]
        )
        labels = torch.cat([torch.full((int((labels == c).sum()),), c) for c in classes])
        return images, labels.to(images.device)

    def train_tensors(self) -> tuple:
        """All training images, class by class, and their labels."""
        images = torch.cat(self.train) if self.train_all is None else self.train_all
        labels = torch.cat(
            [torch.full((len(x),), c, device=x.device) for c, x in enumerate(self.train)]
        )
        return images, labels


def denormalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalized images back to pixels in [0, 1] (not clamped)."""
    view = (1, -1, 1, 1)
    return images * torch.tensor(std, device=images.device).view(view) + torch.tensor(
        mean, device=images.device
    ).view(view)


def from_tensors(name, train_x, train_y, test_x, test_y, mean, std, device, class_names=None):
    """Build a RealData from float images in [0, 1]; mean/std default to the training set's."""
    if mean is None or std is None:
        mean = train_x.mean(dim=(0, 2, 3)).tolist()
        std = train_x.std(dim=(0, 2, 3)).tolist()
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    train_x = normalize(train_x, mean, std)
    classes = int(train_y.max()) + 1
    train = [train_x[train_y == c].to(device) for c in range(classes)]
    return RealData(
        name=name,
        train=train,
        test_images=normalize(test_x, mean, std).to(device),
        test_labels=test_y.long().to(device),
        mean=mean,
        std=std,
        class_names=list(class_names or range(classes)),
    )


class Rows:
    """Some rows of an image store read on demand (``DiskImages``, ``StreamImages``): indexed
    like the store by a slice or an index tensor, in the order of ``index``."""

    def __init__(self, images, index: torch.Tensor):
        self.images, self.index = images, index

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.images.shape[1:]))

    @property
    def device(self):
        return self.images.device

    def __getitem__(self, index) -> torch.Tensor:
        index = index.cpu() if isinstance(index, torch.Tensor) else index
        return self.images[self.index[index]]


def _rows(images, index: torch.Tensor):
    return (
        images[index.to(images.device)] if isinstance(images, torch.Tensor) else Rows(images, index)
    )


def split_validation(real: RealData, per_class: int, seed: int = 0) -> RealData:
    """``real`` without a validation split: per class, ``per_class`` training images drawn with
    a generator of (``seed``, dataset, class), the same for every run of the dataset and never
    part of ``train`` again (so no method, proxy, expert, teacher or coreset sees them); they
    are ``val_images``/``val_labels``, which evaluation scores networks on beside the test set.
    ``per_class=0``: no split."""
    if per_class == 0:
        return real
    smallest = min(len(images) for images in real.train)
    if not 0 < per_class < smallest:
        raise UserError(
            f"dataset.val.per_class={per_class} is invalid: it must be in [0, {smallest}) for "
            f"dataset={real.name}, whose smallest class has {smallest} training images"
        )
    train, val, start, kept, held_all = [], [], 0, [], []
    for c, images in enumerate(real.train):
        gen = torch.Generator().manual_seed(derive_seed(seed, f"val/{real.name}/{c}"))
        order = torch.randperm(len(images), generator=gen)
        held, rest = order[:per_class].sort().values, order[per_class:].sort().values
        val.append(_rows(images, held))
        train.append(_rows(images, rest))
        kept.append(rest + start)
        held_all.append(held + start)
        start += len(images)
    labels = torch.arange(real.num_classes).repeat_interleave(per_class)
    every = real.train_all  # disk and stream storage: every class's images, in order
    return dataclasses.replace(
        real,
        train=train,
        train_all=None if every is None else Rows(every, torch.cat(kept)),
        val_images=torch.cat(val) if every is None else Rows(every, torch.cat(held_all)),
        val_labels=labels.to(real.test_labels.device),
        val={"per_class": per_class, "seed": seed},
    )
