"""Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023)."""
import torch

from .base import ClassMatching


class DM(ClassMatching):
    """Each iteration draws a freshly initialized, frozen network and, class by class, matches the
    mean embedding of augmented real and synthetic images (one shared DSA draw per class):

        L_DM = sum_c || mean(embed(aug(real_c))) - mean(embed(aug(syn_c))) ||^2
    """

    multi_formulation = False

    def __init__(self, net, batch_real: int, augment, real, seed: int, device):
        super().__init__(real, augment, batch_real, seed, device, "dm")
        self.make_net = net

    def losses(self, synthetic, iteration: int):
        net = self.fresh_network(f"dm/net/{iteration}").train().requires_grad_(False)
        loss = 0.0
        for _, real, syn, _ in self.class_pairs(synthetic):
            with torch.no_grad():
                target = net.embed(real).mean(0)
            loss = loss + (target - net.embed(syn).mean(0)).pow(2).sum()
        yield loss
