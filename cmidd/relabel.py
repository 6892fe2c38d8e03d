"""SRe2L's relabel stage: soft labels on stored views (Shen & Xing's FKD, ECCV 2022; VILA-Lab/SRe2L
relabel/generate_soft_label.py and utils_fkd.py for ImageNet, *small_dataset/relabel_cifar.py for
CIFAR).

For each epoch of the student's training, the synthetic images are shuffled into batches and
each image gets a crop and a flip, then each batch a mix with a permutation of itself; the
teacher's logits on the result are stored with the drawn parameters. The student then replays
exactly those views and learns the stored logits, so the teacher never runs during evaluation.
Two recipes, as the two reference codes draw them:

- ImageNet (``padding=0``, ``mix="cutmix"``): a random-resized crop of scale ``crop_scale``, a
  flip, and CutMix (lambda ~ Beta(1, 1), one box per batch);
- CIFAR (``padding=4``, ``mix="mixup"``, ``mix_alpha=0.8``): RandomCrop(32, padding=4) with
  black padding, a flip, and Mixup (x = lambda x + (1 - lambda) x[perm], lambda ~ Beta(0.8, 0.8),
  every batch). relabel_cifar.py runs its teacher online on each mixed batch; storing its
  logits on views drawn in advance gives the student the same targets for the same inputs.

Everything is stored as tensors with the set (``SyntheticSet.relabel``), loadable with
``weights_only``.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .crops import absolute, crop_box, relative, resized_crop
from .errors import UserError, check_number

KEYS = ("order", "boxes", "flips", "mix_perm", "mix_boxes", "logits")
MIXES = ("cutmix", "mixup", "none")


@dataclass
class SoftLabels:
    """Per epoch e: ``order[e]`` [N] the image order (batches are consecutive ``batch_size``
    slices of it); per position, ``boxes[e]`` [N, 4] the crop (top, left, h, w) as fractions of
    the image's size (with ``padding`` > 0: the offset into the image padded by ``padding``
    pixels on each side, h = w = 1), ``flips[e]``
    [N]; per batch, ``mix_perm[e]`` [N] each position's partner within its batch (-1: no mix),
    ``mix_boxes[e]`` [batches, 4] CutMix's pasted box in pixels and ``mix_lams[e]`` [batches]
    Mixup's lambda (None: CutMix); ``logits[e]`` [N, classes] the teacher's outputs (float16,
    as FKD stores them). ``fill``: the padding's value per channel (black, normalized)."""

    order: torch.Tensor
    boxes: torch.Tensor
    flips: torch.Tensor
    mix_perm: torch.Tensor
    mix_boxes: torch.Tensor
    logits: torch.Tensor
    batch_size: int
    mix_lams: torch.Tensor = None
    padding: int = 0
    fill: torch.Tensor = None

    @property
    def epochs(self) -> int:
        return len(self.order)

    def state(self) -> dict:
        state = {k: getattr(self, k).cpu() for k in KEYS} | {"batch_size": self.batch_size}
        if self.padding:
            state |= {"padding": self.padding, "fill": self.fill.cpu()}
        if self.mix_lams is not None:
            state["mix_lams"] = self.mix_lams.cpu()
        return state

    @classmethod
    def from_state(cls, state: dict, device="cpu") -> "SoftLabels":
        """``state`` as ``state()`` wrote it (a set from before the CIFAR recipe has no
        padding and no Mixup)."""
        optional = {k: state[k].to(device) for k in ("mix_lams", "fill") if k in state}
        return cls(
            **{k: state[k].to(device) for k in KEYS},
            batch_size=int(state["batch_size"]),
            padding=int(state.get("padding", 0)),
            **optional,
        )

    def views(self, images: torch.Tensor, epoch: int):
        """(views, teacher logits) of each batch of ``epoch``, in order."""
        yield from _views(images, self, epoch)


def _crop(image, box, draw, h: int, w: int):
    """One image's view: a crop of the padded image, or a random-resized crop."""
    if draw.padding:
        p = draw.padding
        fill = draw.fill.view(1, -1, 1, 1)
        image = F.pad(image - fill, (p, p, p, p)) + fill
        top, left, _, _ = absolute(box, h, w)
        return image[..., top : top + h, left : left + w]
    return resized_crop(image, absolute(box, h, w), (h, w))


def _views(images, draw, epoch: int):
    n, _, h, w = images.shape
    order = draw.order[epoch]
    for b, start in enumerate(range(0, n, draw.batch_size)):
        rows = slice(start, min(start + draw.batch_size, n))
        crops = []
        for position in range(rows.start, rows.stop):
            box = draw.boxes[epoch, position].tolist()
            view = _crop(images[order[position] : order[position] + 1], box, draw, h, w)
            crops.append(view.flip(3) if draw.flips[epoch, position] else view)
        x = torch.cat(crops)
        partner = draw.mix_perm[epoch, rows]
        if partner[0] >= 0 and draw.mix_lams is not None:
            lam = draw.mix_lams[epoch, b]
            x = lam * x + (1 - lam) * x[partner]
        elif partner[0] >= 0:
            top, left, bottom, right = draw.mix_boxes[epoch, b].tolist()
            x[:, :, top:bottom, left:right] = x[partner][:, :, top:bottom, left:right]
        yield x, (draw.logits[epoch, rows] if draw.logits is not None else None)


def _cutmix_box(h: int, w: int, lam: float, generator) -> list:
    """SRe2L's rand_bbox: a box of (1 - lam) of the area, centred uniformly, clipped."""
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = (int(torch.randint(s, (1,), generator=generator)) for s in (h, w))
    return [
        max(cy - cut_h // 2, 0),
        max(cx - cut_w // 2, 0),
        min(cy + cut_h // 2, h),
        min(cx + cut_w // 2, w),
    ]


def _beta(alpha: float, generator: torch.Generator) -> float:
    """lambda ~ Beta(alpha, alpha) from ``generator``: uniform for alpha 1 (CutMix's), else
    NumPy's sampler seeded by a draw of it (torch's has no generator argument; NumPy keeps its
    Generator streams stable only within a version, so another NumPy may draw other lambdas)."""
    if alpha == 1:
        return float(torch.rand(1, generator=generator))
    seed = int(torch.randint(2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _boxes(n: int, h: int, w: int, crop_scale, padding: int, generator) -> list:
    """One epoch's crops as fractions: torchvision's RandomCrop offsets into the padded image
    (``padding`` > 0), else RandomResizedCrop boxes."""
    if padding:
        offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator).tolist()
        return [[top / h, left / w, 1.0, 1.0] for top, left in offsets]
    ratio = (3 / 4, 4 / 3)
    return [relative(crop_box(h, w, crop_scale, ratio, generator), h, w) for _ in range(n)]


def check_recipe(padding: int, mix: str, mix_alpha: float) -> None:
    check_number("method.algorithm.relabel.padding", padding, 0, integer=True)
    if mix not in MIXES:
        raise UserError(f"method.algorithm.relabel.mix={mix} is invalid: one of {', '.join(MIXES)}")
    if check_number("method.algorithm.relabel.mix_alpha", mix_alpha, 0) == 0 and mix != "none":
        raise UserError("method.algorithm.relabel.mix_alpha=0 is invalid: it must be positive")


@torch.no_grad()
def relabel(
    images: torch.Tensor,
    teacher,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    crop_scale=(0.08, 1.0),
    padding: int = 0,
    mix: str = "cutmix",
    mix_alpha: float = 1.0,
    fill=None,
) -> SoftLabels:
    """Draw ``epochs`` epochs of views of ``images`` and store the teacher's logits on them.
    ``fill``: the padding's per-channel value (black in the images' normalized space)."""
    check_recipe(padding, mix, mix_alpha)
    n, c, h, w = images.shape
    batches = math.ceil(n / batch_size)
    order = torch.stack([torch.randperm(n, generator=generator) for _ in range(epochs)])
    boxes = torch.tensor([_boxes(n, h, w, crop_scale, padding, generator) for _ in range(epochs)])
    boxes = boxes.reshape(epochs, n, 4)
    flips = torch.rand(epochs, n, generator=generator) < 0.5
    mix_perm = torch.full((epochs, n), -1, dtype=torch.long)
    mix_boxes = torch.zeros(epochs, batches, 4, dtype=torch.long)
    mix_lams = torch.ones(epochs, batches) if mix == "mixup" else None
    for e in range(epochs if mix != "none" else 0):
        for b, start in enumerate(range(0, n, batch_size)):
            size = min(batch_size, n - start)
            mix_perm[e, start : start + size] = torch.randperm(size, generator=generator)
            lam = _beta(mix_alpha, generator)
            if mix_lams is not None:
                mix_lams[e, b] = lam
            else:
                mix_boxes[e, b] = torch.tensor(_cutmix_box(h, w, lam, generator))
    device = images.device
    fill = torch.zeros(c) if fill is None else torch.as_tensor(fill, dtype=images.dtype)
    draw = SoftLabels(
        *(t.to(device) for t in (order, boxes, flips, mix_perm, mix_boxes)),
        None,
        batch_size,
        None if mix_lams is None else mix_lams.to(device),
        int(padding),
        fill.to(device) if padding else None,
    )
    draw.logits = torch.stack(
        [torch.cat([teacher(x) for x, _ in _views(images, draw, e)]) for e in range(epochs)]
    ).half()
    return draw
