"""What every reader of a set file shares: loading without unpickling, the move from the file's
space into the dataset's, and the one-line refusals of a set that does not fit."""

import logging
from pathlib import Path

import torch

from ..errors import UserError, describe
from ..runtime import generator
from ..synthetic import SyntheticSet

log = logging.getLogger(__name__)

# A set read in the wrong space: pixels read as normalized images have a channel std 0.2 of the
# real images' on CIFAR-10 (0.38 on digits); normalized images read as pixels sit about 2 real
# stds below the real mean on CIFAR-10. A high std alone is no sign: MTT's sets reach 4x.
STD_RATIO = 2.5  # a set's std below 1/STD_RATIO of the real images' is refused
MEAN_OFFSET = 1.5  # in real-image standard deviations
ZCA_EPS = 0.1  # kornia's ZCAWhitening eps in MTT's and DATM's code


def _numpy_scalars() -> list:
    """What unpickles a numpy scalar (its value and dtype, no code): the DC/DSA/DM scripts save
    their accuracies as numpy floats beside the set."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar
    kinds = [np.float64, np.float32, np.int64, np.int32, np.bool_]
    return [scalar, np.dtype, *{type(np.dtype(k)) for k in kinds}]


def load_tensors(path: Path):
    """A file written by ``torch.save`` of tensors, lists, dicts and numbers (numpy scalars
    among them), read with ``weights_only=True``: a file that needs any other object unpickled
    is refused."""
    try:
        with torch.serialization.safe_globals(_numpy_scalars()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- missing, truncated, or pickled objects
        raise UserError(f"synthetic={path} cannot be read as tensors: {describe(error)}") from None


def normalization(mean, std, channels: int, path) -> tuple:
    """The mean and std the file's images were normalized with, which the file does not say."""
    if mean is None or std is None:
        raise UserError(
            f"format.file.mean={mean}, format.file.std={std}: synthetic={path} does not say how "
            "its images were normalized and this format has no entry for the dataset; pass the "
            "reference code's values, e.g. format.file.mean=[0.4914,0.4822,0.4465] "
            "format.file.std=[0.2023,0.1994,0.2010]"
        )
    if len(mean) != channels or len(std) != channels:
        raise UserError(
            f"format.file.mean={list(mean)}, format.file.std={list(std)}: the dataset's images "
            f"have {channels} channels"
        )
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def images_of(value, path) -> torch.Tensor:
    """A file's images as a float tensor [N, C, H, W], or a one-line refusal."""
    if not torch.is_tensor(value) or value.dim() != 4:
        what = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
        raise UserError(f"synthetic={path} holds {what} where images [N, C, H, W] belong")
    return value.float()


def from_pixels(pixels: torch.Tensor, real) -> torch.Tensor:
    """Images in [0, 1] in the dataset's space (on its device): normalized, or whitened where
    its data are."""
    pixels = pixels.to(real.test_images.device)
    if real.whitening is not None:
        with torch.no_grad():
            return real.whitening(pixels)
    return (pixels - _view(real.mean, pixels)) / _view(real.std, pixels)


def _view(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, device=like.device).view(1, -1, 1, 1)


def into_dataset_space(images, mean, std, zca: bool, real, path) -> torch.Tensor:
    """The file's images (normalized with ``mean`` and ``std``, or ZCA-whitened when ``zca``)
    in the dataset's space."""
    images = images_of(images, path).to(real.test_images.device)
    if zca is None:
        raise UserError(
            f"format.file.zca=null: say whether synthetic={path} holds ZCA-whitened images "
            "(true when the run that made it used --zca, as MTT's CIFAR runs do) or not (false)"
        )
    if zca:
        if real.whitening is None:
            raise UserError(
                f"format.file.zca=true: synthetic={path} holds ZCA-whitened images, but this "
                "run's data are not whitened: add zca.enabled=true"
            )
        if real.zca_eps != ZCA_EPS:
            log.warning(
                "zca.eps=%s: MTT and DATM whiten with eps %s, so the file's space differs",
                real.zca_eps,
                ZCA_EPS,
            )
        return images
    mean, std = normalization(mean, std, images.shape[1], path)
    if real.whitening is None and (mean, std) == (tuple(real.mean), tuple(real.std)):
        return images
    return from_pixels(images * _view(std, images) + _view(mean, images), real)


def check_statistics(images: torch.Tensor, real, path, seed: int = 0) -> None:
    """Refuse a set read in the wrong space (see STD_RATIO), comparing its channels with 20
    real training images per class: a heuristic, which format.file.check_statistics=false skips."""
    sample = torch.cat(
        [real.sample(c, 20, generator(seed, f"format/{c}")) for c in range(real.num_classes)]
    ).cpu()
    ours, theirs = images.cpu().transpose(0, 1).flatten(1), sample.transpose(0, 1).flatten(1)
    ratio = ours.std(1) / theirs.std(1)
    offset = (ours.mean(1) - theirs.mean(1)).abs() / theirs.std(1)
    if (ratio < 1 / STD_RATIO).any() or (offset > MEAN_OFFSET).any():
        raise UserError(
            f"synthetic={path} does not look normalized as declared: in the dataset's space its "
            f"channels' std is {_round(ratio)} times the real images' and their means are "
            f"{_round(offset)} real stds off; check format.file.mean/std (or format.file.zca), "
            "or pass format.file.check_statistics=false"
        )


def _round(values: torch.Tensor) -> list:
    return [round(v, 2) for v in values.tolist()]


def foreign_set(images, labels, real, path, name: str, **kwargs) -> SyntheticSet:
    """A ``SyntheticSet`` of images already in the dataset's space, refused in one line when it
    does not fit the dataset (channels, size, classes); ``kwargs``: factor, lr, targets."""
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1:] != real.shape:
        shape = tuple(images.shape[1:]) if torch.is_tensor(images) else type(images).__name__
        raise UserError(
            f"synthetic={path} holds images of shape {shape}; dataset={real.name} has {real.shape}"
        )
    if not torch.is_tensor(labels) or labels.dim() != 1 or len(labels) != len(images):
        raise UserError(f"synthetic={path}: its labels are not one class index per image")
    if int(labels.min()) < 0 or int(labels.max()) >= real.num_classes:
        raise UserError(
            f"synthetic={path} holds labels from {int(labels.min())} to {int(labels.max())}; "
            f"dataset={real.name} has {real.num_classes} classes"
        )
    targets = kwargs.pop("targets", None)
    if targets is not None and (
        not torch.is_tensor(targets) or tuple(targets.shape) != (len(images), real.num_classes)
    ):
        shape = tuple(targets.shape) if torch.is_tensor(targets) else type(targets).__name__
        raise UserError(
            f"synthetic={path} holds soft labels of shape {shape}; "
            f"dataset={real.name} needs one distribution over {real.num_classes} classes per image"
        )
    targets = None if targets is None else targets.float()
    device = real.test_images.device
    synthetic = SyntheticSet(
        images.to(device),
        labels.long().to(device),
        real.mean,
        real.std,
        targets=None if targets is None else targets.to(device),
        **kwargs,
    )
    synthetic.whitening = real.whitening
    synthetic.meta = {"format": name, "dataset": {"zca": real.meta.get("zca")}}
    if not synthetic.is_finite():
        raise UserError(f"synthetic={path} holds NaN or infinite values: it is not a result")
    log.info("read %d images of %s as format=%s", len(images), path, name)
    return synthetic
