"""``dataset.storage=stream``: real images read from their image files on every access.

For data too large even as a uint8 cache (ImageNet-1K at 224 px is about 190 GB), each request
for images (``images[index]``) becomes one epoch of a persistent torch ``DataLoader``: its batch
sampler yields the request split into one chunk per worker, the workers decode the files in
parallel (into pinned memory when the device is CUDA), and the batch is normalized on the device
with the other storages' conversion. A class's images are the split's images of that class in
the split's order, as memory and disk hold them, so all three storages give the same run.
"""

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from .real import RealData, normalize
from .storage import targets_of


class _Requests(Sampler):
    """The batch sampler of a reader: the chunks of the request being served, one per batch."""

    def __init__(self):
        self.chunks = []

    def __iter__(self):
        return iter(list(self.chunks))

    def __len__(self) -> int:
        return len(self.chunks)


class Reader:
    """Decodes any images of one split (a dataset of uint8 CHW tensors) with ``workers``
    processes kept alive between requests."""

    def __init__(self, dataset, workers: int, device):
        self.requests, self.workers = _Requests(), workers
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.requests,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.device(device).type == "cuda",
        )

    def read(self, indices: np.ndarray) -> torch.Tensor:
        """The images at ``indices`` of the split, in that order, as one uint8 batch."""
        pieces = min(max(self.workers, 1), len(indices))
        self.requests.chunks = [c.tolist() for c in np.array_split(indices, pieces)]
        return torch.cat([images for images, _ in self.loader])


class StreamImages:
    """Normalized float images of a split (or of one of its classes: ``indices``), decoded from
    their files per access; indexed like a tensor (``images[index]``, ``images[a:b]``)."""

    def __init__(self, reader: Reader, indices: np.ndarray, shape, mean, std, device):
        self.reader, self.indices, self.image_shape = reader, indices, tuple(shape)
        self.mean, self.std, self.device = mean, std, torch.device(device)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.indices), *self.image_shape))

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        if not isinstance(index, slice | np.ndarray):
            raise TypeError("StreamImages take a slice or an index tensor")
        wanted = self.indices[index]
        if len(wanted) == 0:
            return torch.empty((0, *self.image_shape), device=self.device)
        pixels = self.reader.read(wanted).to(self.device, non_blocking=True)
        return normalize(pixels.float().div_(255), self.mean, self.std)


def stream(name: str, train, test, mean, std, device, workers: int, classes):
    """``RealData`` whose images are read from ``train``'s and ``test``'s files on access."""
    shape = tuple(train[0][0].shape)
    labels = targets_of(train)
    order = np.argsort(labels, kind="stable")  # each class contiguous, in the split's order
    ends = np.cumsum(np.bincount(labels, minlength=len(classes))).tolist()
    reader = Reader(train, workers, device)

    def images(dataset_reader, indices):
        return StreamImages(dataset_reader, indices, shape, mean, std, device)

    return RealData(
        name=name,
        train=[images(reader, order[a:b]) for a, b in zip([0, *ends[:-1]], ends, strict=True)],
        test_images=images(Reader(test, workers, device), np.arange(len(test))),
        test_labels=torch.from_numpy(targets_of(test)).to(device),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        class_names=list(classes),
        train_all=images(reader, order),
    )
