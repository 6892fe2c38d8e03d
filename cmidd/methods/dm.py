"""Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023)."""

import torch

from ..batching import infer, per_sample
from ..fused import fused
from .base import ClassMatching


def _class_means(features: torch.Tensor, batches: list) -> torch.Tensor:
    """The mean of each batch's rows of ``features``, the embeddings of ``torch.cat(batches)``
    (one forward for all classes: valid for networks that treat samples independently)."""
    return torch.stack([part.mean(0) for part in features.split([len(b) for b in batches])])


class DM(ClassMatching):
    """Each iteration draws a freshly initialized, frozen network and, class by class, matches the
    mean embedding of augmented real and synthetic images (one shared DSA draw per class):

        L_DM = sum_c || mean(embed(aug(real_c))) - mean(embed(aug(syn_c))) ||^2

    ``fuse_classes`` embeds all classes in one forward (real images without autograd); ``auto``
    fuses on CUDA only, where it measured faster (1.15x at the paper's shape on an H100; 0.85x on
    a 2-core CPU, BENCHMARKS.md). Networks that are not per-sample (``batching.per_sample``:
    BatchNorm in training mode) are always embedded class by class, since batch statistics would
    mix classes.
    """

    splits_by = "class"

    def __init__(self, net, batch_real: int, augment, real, seed: int, device, fuse_classes="auto"):
        super().__init__(real, augment, batch_real, seed, device, "dm")
        if fuse_classes not in ("auto", True, False):
            raise ValueError(
                f"method.algorithm.fuse_classes={fuse_classes!r} is not one of auto, true, false"
            )
        self.make_net = net
        self.fuse_classes = (
            torch.device(device).type == "cuda" if fuse_classes == "auto" else fuse_classes
        )

    def losses(self, synthetic, iteration: int):
        net = fused(self.fresh_network(f"dm/net/{iteration}").train().requires_grad_(False))
        pairs = list(self.class_pairs(synthetic, net))
        if self.fuse_classes and per_sample(net) and not self.plugin.per_class:
            reals, syns = [real for _, real, _, _ in pairs], [syn for _, _, syn, _ in pairs]
            target = _class_means(infer(net, torch.cat(reals), "embed"), reals)
            yield (target - _class_means(net.embed(torch.cat(syns)), syns)).pow(2).sum()
            return
        loss = 0.0
        for c, real, syn, _ in pairs:
            real_features = infer(net, real, "embed")
            features = net.embed(syn)
            loss = loss + (real_features.mean(0) - features.mean(0)).pow(2).sum()
            loss = loss + self.plugin.class_loss(c, net, real_features, features, syn)
        yield loss
