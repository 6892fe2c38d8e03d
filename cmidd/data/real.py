"""``RealData``: a dataset as every run reads it, whatever holds its images (``storage``).

Training images split by class, the test set, the normalization (or ZCA whitening) statistics;
images indexed as ``images[index]``, ``images[a:b]`` and ``len(images)``, which float tensors in
memory, ``DiskImages`` (``storage``) and ``StreamImages`` (``stream``) all serve.
"""

from dataclasses import dataclass, field

import torch


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

    @property
    def num_classes(self) -> int:
        return len(self.train)

    @property
    def shape(self) -> tuple:
        """(C, H, W) of one image."""
        return tuple(self.train[0].shape[1:])

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
        # Only whitened data carry the key, so the caches of unwhitened data keep their names.
        return meta if self.whitening is None else {**meta, "zca": self.zca_eps}

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
