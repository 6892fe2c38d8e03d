"""IID (Deng et al., "Exploiting Inter-sample and Inter-feature Relations in Dataset
Distillation", CVPR 2024) on DM and IDM, as in its reference code (VincenDen/IID,
``DM+ours/main_DM_IID.py`` L215-253 and ``IDM+ours/IDM_cifar10_IID.py`` L355-385). Two terms
join the method's per-class matching loss:

- class centralization, the synthetic images of a class pulled to their own mean in the
  features f of a pre-trained proxy drawn once per iteration (the reference's ResNet-18 pool;
  cmidd's is ``proxy=...``, the pool CMI uses):

      L_CC = sum_c sum_{s in S_c} || f(s) - mean_{s' in S_c} f(s') ||^2

  The paper writes it through exp(beta * d); the reference code drops the exp and beta ("the
  same result", L245-251), and so does cmidd;
- covariance matching of the matching net's last feature map F_b in R^{C x HW}, with
  Sigma = (1/n) sum_b (F_b - mean F)(F_b - mean F)^T over a batch (C x C), the real side detached:

      L_CM = sum_c || Sigma(real_c) - Sigma(syn_c) ||_F^2

Both are on the augmented batches the method matches, and the total is
L_DM + centralization * L_CC + covariance * L_CM with the reference's fixed weights
(conf/plugin/iid.yaml). The paper's third relation, pushing a class away from the others, is not
in the reference code, so it is not here either.
"""

import torch
from torch import nn

from ..errors import check_number
from ..runtime import generator
from .base import Plugin


def feature_map(net: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The flattened embeddings [n, C*HW] of ``net`` as maps [n, C, HW], C being the channels of
    its last convolution (a ConvNet embeds its last block's map, flattened)."""
    channels = [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
    return features.view(len(features), channels, -1)


def covariance(maps: torch.Tensor) -> torch.Tensor:
    """(1/n) sum_b (F_b - mean F)(F_b - mean F)^T of maps [n, C, HW]: [C, C]."""
    centred = maps - maps.mean(0, keepdim=True)
    return torch.einsum("bcp,bdp->cd", centred, centred) / len(maps)


def covariance_gap(real: torch.Tensor, syn: torch.Tensor) -> torch.Tensor:
    """L_CM of one class: || Sigma(real) - Sigma(syn) ||_F^2, the real side a fixed target."""
    return (covariance(real).detach() - covariance(syn)).pow(2).sum()


def centralization(features: torch.Tensor) -> torch.Tensor:
    """L_CC of one class: the summed squared distance of its features [n, M] to their mean."""
    return (features - features.mean(0, keepdim=True)).pow(2).sum()


class IID(Plugin):
    name = "iid"
    needs = ("proxy",)
    per_class = True

    def __init__(self, centralization: float, covariance: float, seed: int):
        self.centralization = float(
            check_number("plugin.technique.centralization", centralization, 0)
        )
        self.covariance = float(check_number("plugin.technique.covariance", covariance, 0))
        self.pool, self.generator, self.proxy = None, generator(seed, "iid/proxy"), None

    def provide(self, proxy) -> None:
        self.pool = proxy

    def begin(self, iteration: int) -> None:
        if self.centralization > 0:
            self.proxy = self.pool.sample(self.generator)

    def class_loss(self, c: int, net, real, syn, syn_images):
        loss = 0.0
        if self.covariance > 0:
            gap = covariance_gap(feature_map(net, real), feature_map(net, syn))
            loss = loss + self.covariance * gap
        if self.centralization > 0:
            loss = loss + self.centralization * centralization(self.proxy.embed(syn_images))
        return loss

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
