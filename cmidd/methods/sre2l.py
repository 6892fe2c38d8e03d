"""SRe2L's recover stage (Yin, Xing & Shen, "Squeeze, Recover and Relabel", NeurIPS 2023).

Synthetic images start from noise and are optimized so that a BatchNorm teacher (the squeeze
stage, ``teacher=...``) classifies them as their class while the statistics of each batch at
every BatchNorm layer match the layer's running ones (SRe2L's recover/data_synthesis.py):

    L_batch = CE(teacher(jitter(x)), y) + r_bn * sum_l a_l (||mu_l(x) - mu_l||_2
                                                           + ||sigma^2_l(x) - sigma^2_l||_2)

with a_1 = ``first_bn_multiplier`` and a_l = 1 after, biased batch variances, and one jitter
draw per batch and step (a random-resized crop and a flip of the whole batch, then a roll by a
random number of pixels). A batch holds one image of each of ``batch_size`` classes, at one index
within the classes, as SRe2L's loops over ipc_id and class chunks; the batches of an index draw
their jitter from that index's own stream, so a run split by ranges of indices (cmidd/shards.py,
as the reference launches one job per range of ipc_id) draws what the whole run draws.

SRe2L recovers its batches one after another, each with a fresh Adam and a cosine schedule. The
batches share nothing, and Adam acts elementwise, so here every iteration steps all batches at
once: the loss is the sum of the batch losses (each batch under activation checkpointing, so
memory holds one batch's activations, not the set's), and the loop's Adam and cosine schedule
over ``iterations`` make the same updates. The CMI term (the loop's) is then the CMI of the whole
recovered set under the proxy pool, every iteration (of the shard's images, in a run split by IPC
index). After each step the pixels are clipped to
the image range, as SRe2L's clip.
"""

import logging

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from .. import runtime
from ..crops import crop_box, resized_crop
from ..errors import UserError
from ..relabel import check_recipe, relabel
from .base import Method

log = logging.getLogger(__name__)


def bn_statistics_loss(net: nn.Module, images: torch.Tensor, first_multiplier: float) -> tuple:
    """(logits, R_BN) of ``net`` in eval mode on ``images``: at every BatchNorm2d layer, the L2
    distances between the batch's per-channel mean and biased variance of the layer's input and
    the layer's running statistics, summed over layers, the first one weighted by
    ``first_multiplier``."""
    layers = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    if not layers:
        raise UserError(f"teacher.net ({type(net).__name__}) has no BatchNorm2d layer to match")
    terms = []

    def match(layer, inputs, _output):
        x = inputs[0]
        mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
        terms.append(
            torch.linalg.vector_norm(layer.running_var - var)
            + torch.linalg.vector_norm(layer.running_mean - mean)
        )

    hooks = [layer.register_forward_hook(match) for layer in layers]
    try:
        logits = net(images)
    finally:
        for hook in hooks:
            hook.remove()
    weights = [first_multiplier] + [1.0] * (len(terms) - 1)
    return logits, sum(w * t for w, t in zip(weights, terms, strict=True))


class SRe2L(Method):
    """The recover stage, against the squeeze stage's network (``provide(teacher=...)``)."""

    needs = ("teacher",)
    soft_labels = True
    splits_by = "ipc"

    def __init__(
        self,
        real,
        seed: int,
        device,
        batch_size: int,
        r_bn: float,
        first_bn_multiplier: float,
        jitter=(0, 32),
        crop: bool = True,
        crop_scale=(0.08, 1.0),
        flip: bool = True,
        relabel: dict = None,
    ):
        """``relabel``: the relabel stage's settings (``cmidd.relabel.relabel``'s epochs,
        batch_size, crop_scale, padding, mix, mix_alpha), run by ``finish``."""
        self.real, self.batch_size = real, batch_size
        self.r_bn, self.first_bn_multiplier = r_bn, first_bn_multiplier
        self.jitter, self.flip = tuple(jitter), flip
        self.crop_scale = tuple(crop_scale) if crop else None
        self.relabel = dict(relabel or {})
        padding = self.relabel.get("padding", 0)
        check_recipe(padding, self.relabel.get("mix", "cutmix"), self.relabel.get("mix_alpha", 1.0))
        if padding and real.whitening is not None:  # black is -mean/std only per channel
            raise UserError(
                f"method.algorithm.relabel.padding={padding} is invalid with zca.enabled=true: "
                "the padding is black in normalized pixels, not in whitened ones"
            )
        self.seed, self.indices, self.gens = seed, [], {}

    def provide(self, teacher: nn.Module) -> None:
        self.teacher = teacher

    def initial_set(self, real, ipc: int, generator, classes=None, indices=None):
        """Noise (``method.init``), and a jitter stream for each index within the classes held
        (all ``ipc`` of them, or a shard's ``indices``)."""
        self.indices = list(range(ipc) if indices is None else indices)
        self.gens = {k: runtime.generator(self.seed, f"sre2l/jitter/{k}") for k in self.indices}
        return super().initial_set(real, ipc, generator, classes, indices)

    def state_dict(self) -> dict:
        return {"jitter_streams": {k: g.get_state() for k, g in self.gens.items()}}

    def load_state_dict(self, state: dict) -> None:
        if "jitter_streams" not in state:
            raise UserError(
                "resume=... is invalid: the checkpoint comes from a cmidd that jittered every "
                "recovery batch from one random stream; start the run again"
            )
        for k, g in self.gens.items():
            g.set_state(state["jitter_streams"][k])

    def batches(self, labels: torch.Tensor) -> list:
        """(index, rows) per recovery batch: for each index within the classes (of
        ``self.indices``, the set's images in order), the classes in chunks of ``batch_size``,
        one image each, by their rows in the set."""
        rows = [torch.nonzero(labels == c).flatten() for c in range(self.real.num_classes)]
        chunks = [
            range(a, min(a + self.batch_size, len(rows)))
            for a in range(0, len(rows), self.batch_size)
        ]
        return [
            (index, torch.stack([rows[c][k] for c in chunk]))
            for k, index in enumerate(self.indices)
            for chunk in chunks
        ]

    def _jitter(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.crop_scale is not None:
            box = crop_box(h, w, self.crop_scale, (3 / 4, 4 / 3), gen)
            x = resized_crop(x, box, (h, w))
        if self.flip and torch.rand(1, generator=gen).item() < 0.5:
            x = x.flip(3)
        low, high = self.jitter
        shifts = torch.randint(low, high + 1, (2,), generator=gen).tolist()
        return torch.roll(x, shifts=shifts, dims=(2, 3))

    def _batch_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits, r_bn = bn_statistics_loss(self.teacher, x, self.first_bn_multiplier)
        return F.cross_entropy(logits, y) + self.r_bn * r_bn

    def losses(self, synthetic, iteration: int):
        images, labels = synthetic.images, synthetic.labels
        batches = self.batches(labels)
        total = 0.0
        for index, rows in batches:
            x = self._jitter(images[rows], self.gens[index])
            if len(batches) == 1:
                total = total + self._batch_loss(x, labels[rows])
            else:  # only this batch's input is kept; backward recomputes its activations
                total = total + checkpoint(self._batch_loss, x, labels[rows], use_reentrant=False)
        yield total
        self._clip(synthetic)

    def finish(self, synthetic) -> None:
        """The relabel stage: the teacher's soft labels on stored views of the set."""
        images, _ = synthetic.decoded()
        log.info("relabelling the set: %s", self.relabel)
        black = [-m / s for m, s in zip(synthetic.mean, synthetic.std, strict=True)]
        synthetic.relabel = relabel(
            images.detach(),
            self.teacher,
            generator=runtime.generator(self.seed, "sre2l/relabel"),
            fill=black,
            **self.relabel,
        )

    @torch.no_grad()
    def _clip(self, synthetic) -> None:
        """Pixels back into [0, 1] (in the normalized space), after each update."""
        if synthetic.whitening is not None:
            return
        view = (1, -1, 1, 1)
        mean = torch.tensor(synthetic.mean, device=synthetic.images.device).view(view)
        std = torch.tensor(synthetic.std, device=synthetic.images.device).view(view)
        synthetic.images.copy_(
            torch.maximum(torch.minimum(synthetic.images, (1 - mean) / std), -mean / std)
        )
