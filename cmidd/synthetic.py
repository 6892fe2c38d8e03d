"""The synthetic set: learnable images with fixed labels, saved as ``synthetic.pt``."""

import hashlib
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import files
from .data.real import denormalize
from .errors import NonFiniteError, UserError, describe

log = logging.getLogger(__name__)


def checksum(state: dict) -> str:
    """sha256 of a saved set's tensors (images, labels, soft targets if any) and learned lr:
    what a result is."""
    digest = hashlib.sha256()
    for key in ("images", "labels", "targets"):
        if state.get(key) is not None:
            digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    for key, value in sorted((state.get("relabel") or {}).items()):  # SRe2L's soft labels
        digest.update(key.encode())
        if torch.is_tensor(value):
            digest.update(value.cpu().contiguous().view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    digest.update(repr(state.get("lr")).encode())
    return digest.hexdigest()


def class_streams(generator: torch.Generator, num_classes: int) -> list:
    """One generator per class, seeded in class order from ``generator``."""
    seeds = torch.randint(2**62, (num_classes,), generator=generator).tolist()
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def decode(images: torch.Tensor, labels: torch.Tensor, factor: int) -> tuple:
    """IDC's multi-formulation: each stored image [C, H, W] holds factor x factor smaller images;
    each patch is upsampled (bilinear) back to H x W and keeps the stored image's label, so N
    stored images decode into N * factor^2 training images."""
    if factor == 1:
        return images, labels
    n, c, h, w = images.shape
    ph, pw = h // factor, w // factor
    patches = images[..., : ph * factor, : pw * factor].unfold(2, ph, ph).unfold(3, pw, pw)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(n * factor**2, c, ph, pw)
    return (
        F.interpolate(patches, size=(h, w), mode="bilinear", align_corners=False),
        labels.repeat_interleave(factor**2),
    )


def encode(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Tile groups of factor^2 images [N * factor^2, C, H, W], downsampled (bilinear, as IDM's
    initialization; IDC's uses nearest), into N stored images: a multi-formulation set's start."""
    if factor == 1:
        return images
    m, c, h, w = images.shape
    small = F.interpolate(
        images, size=(h // factor, w // factor), mode="bilinear", align_corners=False
    )
    grid = small.reshape(m // factor**2, factor, factor, c, h // factor, w // factor)
    return grid.permute(0, 3, 1, 4, 2, 5).reshape(m // factor**2, c, h, w)


class SyntheticSet(nn.Module):
    """``images`` [N, C, H, W] live in the dataset's normalized (or whitened) space; ``labels``
    [N] are their classes (what matching, CMI and the grid group by); ``targets``, if given, are
    soft labels [N, classes] (a distribution per image) that evaluation trains on instead of the
    hard labels. ``factor`` > 1 marks a multi-formulation set (IDC/IDM), whose stored images
    each decode into factor^2 images; ``lr``, if given, is a learnable training learning rate
    distilled with the images (MTT), with which the set is evaluated."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean,
        std,
        factor: int = 1,
        lr: float = None,
        targets: torch.Tensor = None,
    ):
        super().__init__()
        self.images = nn.Parameter(images.detach().clone())
        self.register_buffer("labels", labels.detach().clone().long())
        self.register_buffer(
            "targets", None if targets is None else targets.detach().clone().float()
        )
        self.register_parameter(
            "lr",
            None if lr is None else nn.Parameter(torch.tensor(float(lr), device=images.device)),
        )
        self.mean, self.std, self.factor = tuple(mean), tuple(std), int(factor)
        self.whitening = None  # the data's ZCA, if whitened: images are shown through its inverse
        self.relabel = None  # FKD soft labels (cmidd.relabel.SoftLabels), made by SRe2L's relabel

    @property
    def learned_lr(self):
        """The distilled learning rate as a float, or None when the set has none."""
        return None if self.lr is None else self.lr.detach().item()

    @classmethod
    def from_real(
        cls,
        real,
        ipc: int,
        generator: torch.Generator,
        init: str = "real",
        factor: int = 1,
        lr: float = None,
        pick=None,
        classes=None,
        indices=None,
    ):
        """``ipc`` stored images per class, from distinct random real images (factor^2 of them,
        downsampled and tiled, per stored image) or Gaussian noise; ``pick(c, n, stream)``, if
        given, chooses the real images of class c instead (from the class's ``stream``).
        ``classes``: the classes the set holds (all by default; a shard of a run holds some);
        ``indices``: the images within each class it holds (all ``ipc`` by default; a shard by
        IPC index holds a range). Each class draws all ``ipc`` from its own stream, seeded from
        ``generator`` for every class in turn, so an image starts the same whichever are held."""
        if init not in ("real", "noise"):
            raise ValueError(f"method.init={init!r} is not one of real, noise")
        streams = class_streams(generator, real.num_classes)
        classes = range(real.num_classes) if classes is None else classes
        indices = list(range(ipc) if indices is None else indices)

        def start(c: int) -> torch.Tensor:
            if init == "noise":
                return torch.randn(ipc, *real.shape, generator=streams[c])
            pick_from = pick or (lambda c, n, stream: real.sample(c, n, stream))
            return encode(pick_from(c, ipc * factor**2, streams[c]), factor)

        device = real.test_images.device
        images = torch.cat([start(c)[indices].to(device) for c in classes])
        labels = torch.tensor(list(classes), device=device).repeat_interleave(len(indices))
        synthetic = cls(images, labels, real.mean, real.std, factor, lr)
        synthetic.whitening = real.whitening
        return synthetic

    @property
    def classes(self) -> list:
        """The classes the set holds, in order."""
        return self.labels.unique().tolist()

    def decoded(self) -> tuple:
        """The training images and their labels: the stored ones when ``factor`` is 1, else
        factor^2 decoded images per stored image."""
        return decode(self.images, self.labels, self.factor)

    def train_set(self) -> tuple:
        """What evaluation trains on: the decoded images and their targets, the soft labels if
        the set has them, else the hard labels."""
        images, labels = self.decoded()
        if self.targets is None:
            return images, labels
        return images, self.targets.repeat_interleave(self.factor**2, dim=0)

    def by_class(self, label: int) -> torch.Tensor:
        return self.images[self.labels == label]

    def denormalized(self, images: torch.Tensor = None) -> torch.Tensor:
        """The stored images (or ``images`` in the same space) as pixels in [0, 1]."""
        images = (self.images if images is None else images).detach()
        if self.whitening is not None:
            images = self.whitening.inverse_transform(images)
        return denormalize(images, self.mean, self.std).clamp(0, 1)

    def state(self) -> dict:
        return {
            "images": self.images.detach().cpu(),
            "labels": self.labels.cpu(),
            "targets": None if self.targets is None else self.targets.cpu(),
            "mean": list(self.mean),
            "std": list(self.std),
            "factor": self.factor,
            "lr": self.learned_lr,
            "relabel": None if self.relabel is None else self.relabel.state(),
        }

    def snapshot(self) -> dict:
        """A copy of the learnable values, to go back to with ``restore``."""
        return {"images": self.images.detach().clone(), "lr": self.learned_lr}

    def restore(self, snapshot: dict) -> None:
        with torch.no_grad():
            self.images.copy_(snapshot["images"])
            if self.lr is not None:
                self.lr.fill_(snapshot["lr"])

    def is_finite(self) -> bool:
        values = [*self.parameters()] + ([] if self.targets is None else [self.targets])
        return all(bool(torch.isfinite(v).all()) for v in values)

    def save(self, path: Path, **meta) -> None:
        """``meta`` (iteration, seed, dataset...) is stored beside the tensors, with their
        checksum. The file is written whole or not at all; a non-finite set is never written."""
        if not self.is_finite():
            raise NonFiniteError(f"the synthetic set is NaN or infinite: {path} was not written")
        state = {**self.state(), **meta}
        state["sha256"] = checksum(state)
        files.save(state, path)

    def grid(self, images: torch.Tensor = None) -> torch.Tensor:
        """The set (or ``images`` laid out as it) as one picture [C, H, W]: a row per class,
        de-normalized; images under 32 pixels wide are enlarged, pixel by pixel, to be seen."""
        from torchvision.utils import make_grid  # torchvision takes seconds to import

        images = (self.denormalized() if images is None else images).cpu()
        if images.shape[-1] < 32:
            images = F.interpolate(images, scale_factor=-(-32 // images.shape[-1]), mode="nearest")
        ipc = int((self.labels == self.labels[0]).sum())
        return make_grid(images, nrow=ipc, padding=1, pad_value=1.0)

    def save_grid(self, path: Path) -> None:
        from torchvision.utils import save_image

        save_image(self.grid(), path)

    @classmethod
    def load(cls, path, device="cpu"):
        """The set and the metadata saved with it; a ``UserError`` if the file is unreadable."""
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            synthetic = cls(
                state["images"],
                state["labels"],
                state["mean"],
                state["std"],
                state.get("factor", 1),
                state.get("lr"),
                state.get("targets"),
            )
            if state.get("relabel") is not None:
                from .relabel import SoftLabels

                synthetic.relabel = SoftLabels.from_state(state["relabel"], device)
        except Exception as error:  # noqa: BLE001 -- missing, truncated, corrupt or foreign
            raise UserError(
                f"synthetic={path} cannot be read as a synthetic set: {describe(error)}"
            ) from None
        if "sha256" not in state:
            log.warning(
                "synthetic=%s has no checksum (saved by an older cmidd): not verified", path
            )
        elif checksum(state) != state["sha256"]:
            raise UserError(
                f"synthetic={path} is corrupt: its images do not match the checksum saved with them"
            )
        if not synthetic.is_finite():
            raise UserError(f"synthetic={path} holds NaN or infinite values: it is not a result")
        synthetic.meta = {
            k: v for k, v in state.items() if k not in synthetic.state() and k != "sha256"
        }
        return synthetic


def check_fits(path, synthetic: SyntheticSet, real) -> None:
    """A saved synthetic set must fit the dataset it is evaluated on."""
    shape = tuple(synthetic.images.shape[1:])
    if shape != real.shape or int(synthetic.labels.max()) >= real.num_classes:
        raise UserError(
            f"synthetic={path} holds images of shape {shape} with labels up to "
            f"{int(synthetic.labels.max())}; dataset={real.name} has {real.shape} and "
            f"{real.num_classes} classes"
        )
    if synthetic.targets is not None and synthetic.targets.shape[1] != real.num_classes:
        raise UserError(
            f"synthetic={path} holds soft labels over {synthetic.targets.shape[1]} "
            f"classes; dataset={real.name} has {real.num_classes}"
        )
    distilled_on = synthetic.meta.get("dataset", {}).get("zca")
    if distilled_on != real.meta.get("zca"):
        raise UserError(
            f"synthetic={path} was distilled on data with zca={distilled_on}, this run's "
            f"data have zca={real.meta.get('zca')}: set zca.enabled="
            f"{str(distilled_on is not None).lower()}"
        )
    if any(
        abs(a - b) > 1e-4
        for a, b in zip(synthetic.mean + synthetic.std, real.mean + real.std, strict=True)
    ):
        raise UserError(
            f"synthetic={path} was normalized with mean={list(synthetic.mean)}, "
            f"std={list(synthetic.std)}; dataset={real.name} uses "
            f"mean={list(real.mean)}, std={list(real.std)}"
        )
