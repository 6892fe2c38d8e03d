"""Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023)."""

import torch
from torch import nn

from .base import ClassMatching

# Images per forward on the real side: many classes (CIFAR-100, TinyImageNet) x 256 real images
# in one forward would need tens of GB of activations.
REAL_CHUNK = 1024


def _class_means(embed, batches: list, chunk: int = None) -> torch.Tensor:
    """Mean embedding of each batch, from forwards over all of them at once, ``chunk`` images at
    a time (one kernel launch per layer instead of one per class; valid for networks that treat
    samples independently)."""
    images = torch.cat(batches)
    features = torch.cat([embed(part) for part in images.split(chunk or len(images))])
    return torch.stack([chunk.mean(0) for chunk in features.split([len(b) for b in batches])])


class DM(ClassMatching):
    """Each iteration draws a freshly initialized, frozen network and, class by class, matches the
    mean embedding of augmented real and synthetic images (one shared DSA draw per class):

        L_DM = sum_c || mean(embed(aug(real_c))) - mean(embed(aug(syn_c))) ||^2

    ``fuse_classes`` embeds all classes in one forward (real images without autograd); ``auto``
    fuses on CUDA only, where it measured faster (1.15x at the paper's shape on an H100; 0.85x on
    a 2-core CPU, BENCHMARKS.md). Networks with BatchNorm are always embedded class by class,
    since batch statistics would mix classes.
    """

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
        net = self.fresh_network(f"dm/net/{iteration}").train().requires_grad_(False)
        pairs = list(self.class_pairs(synthetic, net))
        batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
        if self.fuse_classes and not batchnorm and not self.plugin.per_class:
            with torch.no_grad():
                target = _class_means(net.embed, [real for _, real, _, _ in pairs], REAL_CHUNK)
            yield (target - _class_means(net.embed, [syn for _, _, syn, _ in pairs])).pow(2).sum()
            return
        loss = 0.0
        for c, real, syn, _ in pairs:
            with torch.no_grad():
                real_features = net.embed(real)
            features = net.embed(syn)
            loss = loss + (real_features.mean(0) - features.mean(0)).pow(2).sum()
            loss = loss + self.plugin.class_loss(c, net, real_features, features, syn)
        yield loss
