"""Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023)."""
import torch

from ..runtime import build_seeded
from .base import RandomStreams


class DM(RandomStreams):
    """Each iteration draws a freshly initialized, frozen network and, class by class, matches the
    mean embedding of augmented real and synthetic images (one shared DSA draw per class):

        L_DM = sum_c || mean(embed(aug(real_c))) - mean(embed(aug(syn_c))) ||^2
    """

    multi_formulation = False

    def __init__(self, net, batch_real: int, augment, real, seed: int, device):
        self.make_net, self.batch_real, self.augment = net, batch_real, augment
        self.real, self.seed, self.device = real, seed, device
        super().__init__(seed, "dm")

    def _network(self, iteration: int):
        c, h, _ = self.real.shape
        net = build_seeded(self.make_net, self.seed, f"dm/net/{iteration}", in_channels=c,
                           num_classes=self.real.num_classes, image_size=h)
        return net.to(self.device).train().requires_grad_(False)

    def losses(self, synthetic, iteration: int):
        net = self._network(iteration)
        images, labels = synthetic.decoded()
        loss = 0.0
        for c in range(self.real.num_classes):
            real = self.real.sample(c, self.batch_real, self.sampler)
            syn = images[labels == c]
            params = self.augment.draw(max(len(real), len(syn)), real.shape[-2:], self.aug_gen,
                                       shared=True)
            with torch.no_grad():
                target = net.embed(self.augment.apply(real, params)).mean(0)
            loss = loss + (target - net.embed(self.augment.apply(syn, params)).mean(0)).pow(2).sum()
        yield loss
