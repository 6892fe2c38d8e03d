"""Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021), with explicit generators.

As in the DSA reference ("S" mode), each call picks one operation group at random and applies it
with per-sample parameters, or one set of parameters for the whole batch (``shared``); with
``compose`` every operation of the strategy is applied in turn (IDC's matching augmentation);
the operations in ``always`` are applied on every call before the one drawn (IDC's DiffAug, which
always flips and jitters colour, then draws one of the rest). Parameters
are drawn first (``draw``) on a CPU generator, then applied (``apply``) to any number of batches:
applying one shared draw to a real and a synthetic batch is the siamese augmentation, and the
result does not depend on the device.
"""

import math

import torch
import torch.nn.functional as F

OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


class DSA:
    def __init__(
        self,
        strategy=OPS,
        scale=1.2,
        rotate=15.0,
        flip=0.5,
        brightness=1.0,
        saturation=2.0,
        contrast=0.5,
        crop_pad=0.125,
        cutout=0.5,
        compose=False,
        always=(),
    ):
        unknown = set(strategy) - set(OPS)
        if unknown or not strategy:
            raise ValueError(
                f"augment.strategy={list(strategy)} must be a non-empty subset of {list(OPS)}"
            )
        if set(always) - set(OPS):
            raise ValueError(f"augment.always={list(always)} must be a subset of {list(OPS)}")
        self.strategy, self.compose, self.always = tuple(strategy), compose, tuple(always)
        self.ratio = dict(
            scale=scale,
            rotate=rotate,
            flip=flip,
            brightness=brightness,
            saturation=saturation,
            contrast=contrast,
            crop_pad=crop_pad,
            cutout=cutout,
        )

    def draw(self, n: int, size: tuple, generator: torch.Generator, shared: bool = False) -> dict:
        """Parameters for up to ``n`` samples of spatial ``size`` (H, W): per sample, or with
        ``shared`` one draw for the whole batch (the reference's "batchmode", which DM and DSA
        use so that every real and synthetic image of a class gets the same transform)."""
        if self.compose:
            return {
                "op": "sequence",
                "steps": [self._draw_op(op, n, size, generator, shared) for op in self.strategy],
            }
        steps = [self._draw_op(op, n, size, generator, shared) for op in self.always]
        op = self.strategy[torch.randint(len(self.strategy), (1,), generator=generator).item()]
        drawn = self._draw_op(op, n, size, generator, shared)
        return {"op": "sequence", "steps": [*steps, drawn]} if steps else drawn

    def _draw_op(self, op, n, size, generator, shared):
        params = getattr(self, f"_draw_{op}")(1 if shared else n, size, generator)
        if shared:
            params = {k: v.expand(n) if torch.is_tensor(v) else v for k, v in params.items()}
        return {"op": op, **params}

    def _draw_color(self, n, size, gen):
        r = self.ratio
        return {
            "brightness": (torch.rand(n, generator=gen) - 0.5) * r["brightness"],
            "saturation": torch.rand(n, generator=gen) * r["saturation"],
            "contrast": torch.rand(n, generator=gen) + r["contrast"],
        }

    def _draw_crop(self, n, size, gen):
        sh, sw = (int(s * self.ratio["crop_pad"] + 0.5) for s in size)
        return {
            "dy": torch.randint(-sh, sh + 1, (n,), generator=gen),
            "dx": torch.randint(-sw, sw + 1, (n,), generator=gen),
        }

    def _draw_cutout(self, n, size, gen):
        (h, w), (ch, cw) = size, (int(s * self.ratio["cutout"] + 0.5) for s in size)
        return {
            "size": (ch, cw),
            "cy": torch.randint(0, h + (1 - ch % 2), (n,), generator=gen),
            "cx": torch.randint(0, w + (1 - cw % 2), (n,), generator=gen),
        }

    def _draw_flip(self, n, size, gen):
        return {"flip": torch.rand(n, generator=gen) < self.ratio["flip"]}

    def _draw_scale(self, n, size, gen):
        hi = self.ratio["scale"]
        return {
            "sx": torch.rand(n, generator=gen) * (hi - 1 / hi) + 1 / hi,
            "sy": torch.rand(n, generator=gen) * (hi - 1 / hi) + 1 / hi,
        }

    def _draw_rotate(self, n, size, gen):
        return {
            "angle": (torch.rand(n, generator=gen) - 0.5) * 2 * self.ratio["rotate"] / 180 * math.pi
        }

    def apply(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        if params["op"] == "sequence":
            for step in params["steps"]:
                x = self.apply(x, step)
            return x
        n = x.shape[0]
        p = {k: v[:n].to(x.device) if torch.is_tensor(v) else v for k, v in params.items()}
        return getattr(self, "_" + p["op"])(x, p).contiguous()

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw(x.shape[0], x.shape[-2:], generator))

    @staticmethod
    def _color(x, p):
        view = (-1, 1, 1, 1)
        x = x + p["brightness"].view(view)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * p["saturation"].view(view) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * p["contrast"].view(view) + mean

    @staticmethod
    def _crop(x, p):
        # Translation with zero fill: read from a 1-pixel zero-padded copy, clamping indices.
        n, _, h, w = x.shape
        rows = (torch.arange(h, device=x.device) + p["dy"].view(-1, 1) + 1).clamp(0, h + 1)
        cols = (torch.arange(w, device=x.device) + p["dx"].view(-1, 1) + 1).clamp(0, w + 1)
        padded = F.pad(x, (1, 1, 1, 1))
        batch = torch.arange(n, device=x.device).view(-1, 1, 1)
        return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(
            0, 3, 1, 2
        )

    @staticmethod
    def _cutout(x, p):
        (ch, cw), (h, w) = p["size"], x.shape[-2:]
        top, left = (p["cy"] - ch // 2).view(-1, 1), (p["cx"] - cw // 2).view(-1, 1)
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        inside_r = (rows >= top) & (rows < top + ch)
        inside_c = (cols >= left) & (cols < left + cw)
        mask = ~(inside_r[:, :, None] & inside_c[:, None, :])
        return x * mask.unsqueeze(1).to(x.dtype)

    @staticmethod
    def _flip(x, p):
        return torch.where(p["flip"].view(-1, 1, 1, 1), x.flip(3), x)

    @staticmethod
    def _affine(x, theta):
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, align_corners=True)

    def _scale(self, x, p):
        zero = torch.zeros_like(p["sx"])
        theta = torch.stack(
            [torch.stack([p["sx"], zero, zero], 1), torch.stack([zero, p["sy"], zero], 1)], 1
        )
        return self._affine(x, theta)

    def _rotate(self, x, p):
        a, zero = p["angle"], torch.zeros_like(p["angle"])
        theta = torch.stack(
            [torch.stack([a.cos(), -a.sin(), zero], 1), torch.stack([a.sin(), a.cos(), zero], 1)], 1
        )
        return self._affine(x, theta)


class NoAugment:
    """Identity with DSA's interface, for ``augment=none``."""

    def draw(self, n, size, generator, shared=False):
        return {}

    def apply(self, x, params):
        return x

    def __call__(self, x, generator):
        return x
