"""Random-resized crops and flips drawn from an explicit generator, as boxes that can be stored
and replayed (SRe2L's recovery jitter, and FKD's relabelling, whose student training replays the
crops the teacher labelled)."""

import math

import torch
from torch.nn import functional as F


def crop_box(height: int, width: int, scale, ratio, generator: torch.Generator) -> tuple:
    """(top, left, h, w) of a random crop covering ``scale`` of the area with aspect ``ratio``:
    torchvision's ``RandomResizedCrop.get_params`` algorithm (10 tries, then a centre crop),
    drawing from ``generator`` instead of the global stream."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator).tolist()
        target = area * (scale[0] + u[0] * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + u[1] * (log_ratio[1] - log_ratio[0]))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop(images: torch.Tensor, box, size: tuple) -> torch.Tensor:
    """The ``box`` (top, left, h, w) of every image, resized (bilinear, antialiased, as
    torchvision's tensor transform) to ``size``; differentiable."""
    top, left, h, w = (int(v) for v in box)
    patch = images[..., top : top + h, left : left + w]
    return F.interpolate(patch, size=size, mode="bilinear", align_corners=False, antialias=True)


def relative(box, height: int, width: int) -> list:
    """A box as fractions of the image (FKD's stored coordinates), and back with ``absolute``."""
    top, left, h, w = box
    return [top / height, left / width, h / height, w / width]


def absolute(coords, height: int, width: int) -> tuple:
    top, left, h, w = (float(c) for c in coords)
    return round(top * height), round(left * width), round(h * height), round(w * width)
