"""SRe2L's relabel stage: FKD-style soft labels (Shen & Xing, ECCV 2022; VILA-Lab/SRe2L
relabel/generate_soft_label.py and utils_fkd.py).

For each epoch of the student's training, the synthetic images are shuffled into batches, each
image gets a random-resized crop (scale ``crop_scale``) and a flip, each batch a CutMix (one
lambda ~ Beta(1, 1), one box, one permutation), and the teacher's logits on the result are
stored with the drawn parameters. The student then replays exactly those views and learns the
stored logits, so the teacher never runs during evaluation. Everything is stored as tensors
with the set (``SyntheticSet.relabel``), loadable with ``weights_only``.
"""

import math
from dataclasses import dataclass

import torch

from .crops import absolute, crop_box, relative, resized_crop

KEYS = ("order", "boxes", "flips", "mix_perm", "mix_boxes", "logits")


@dataclass
class SoftLabels:
    """Per epoch e: ``order[e]`` [N] the image order (batches are consecutive ``batch_size``
    slices of it); per position, ``boxes[e]`` [N, 4] the crop as fractions (top, left, h, w),
    ``flips[e]`` [N]; per batch, ``mix_perm[e]`` [N] each position's CutMix partner within its
    batch (-1: no CutMix) and ``mix_boxes[e]`` [batches, 4] the pasted box in pixels;
    ``logits[e]`` [N, classes] the teacher's outputs (float16, as FKD stores them)."""

    order: torch.Tensor
    boxes: torch.Tensor
    flips: torch.Tensor
    mix_perm: torch.Tensor
    mix_boxes: torch.Tensor
    logits: torch.Tensor
    batch_size: int

    @property
    def epochs(self) -> int:
        return len(self.order)

    def state(self) -> dict:
        return {**{k: getattr(self, k).cpu() for k in KEYS}, "batch_size": self.batch_size}

    @classmethod
    def from_state(cls, state: dict, device="cpu") -> "SoftLabels":
        return cls(**{k: state[k].to(device) for k in KEYS}, batch_size=int(state["batch_size"]))

    def views(self, images: torch.Tensor, epoch: int):
        """(views, teacher logits) of each batch of ``epoch``, in order."""
        yield from _views(images, self, epoch)


def _views(images, draw, epoch: int):
    n, _, h, w = images.shape
    order = draw.order[epoch]
    for b, start in enumerate(range(0, n, draw.batch_size)):
        rows = slice(start, min(start + draw.batch_size, n))
        crops = []
        for position in range(rows.start, rows.stop):
            box = absolute(draw.boxes[epoch, position].tolist(), h, w)
            view = resized_crop(images[order[position] : order[position] + 1], box, (h, w))
            crops.append(view.flip(3) if draw.flips[epoch, position] else view)
        x = torch.cat(crops)
        partner = draw.mix_perm[epoch, rows]
        if partner[0] >= 0:
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


@torch.no_grad()
def relabel(
    images: torch.Tensor,
    teacher,
    epochs: int,
    batch_size: int,
    generator: torch.Generator,
    crop_scale=(0.08, 1.0),
    cutmix: bool = True,
) -> SoftLabels:
    """Draw ``epochs`` epochs of views of ``images`` and store the teacher's logits on them."""
    n, _, h, w = images.shape
    batches = math.ceil(n / batch_size)
    order = torch.stack([torch.randperm(n, generator=generator) for _ in range(epochs)])
    boxes = torch.tensor(
        [
            [
                relative(crop_box(h, w, crop_scale, (3 / 4, 4 / 3), generator), h, w)
                for _ in range(n)
            ]
            for _ in range(epochs)
        ]
    ).reshape(epochs, n, 4)
    flips = torch.rand(epochs, n, generator=generator) < 0.5
    mix_perm = torch.full((epochs, n), -1, dtype=torch.long)
    mix_boxes = torch.zeros(epochs, batches, 4, dtype=torch.long)
    if cutmix:
        for e in range(epochs):
            for b, start in enumerate(range(0, n, batch_size)):
                size = min(batch_size, n - start)
                mix_perm[e, start : start + size] = torch.randperm(size, generator=generator)
                lam = float(torch.rand(1, generator=generator))  # Beta(1, 1) is uniform
                mix_boxes[e, b] = torch.tensor(_cutmix_box(h, w, lam, generator))
    device = images.device
    draw = SoftLabels(
        *(t.to(device) for t in (order, boxes, flips, mix_perm, mix_boxes)), None, batch_size
    )
    draw.logits = torch.stack(
        [torch.cat([teacher(x) for x, _ in _views(images, draw, e)]) for e in range(epochs)]
    ).half()
    return draw
