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

The reference's weights were set for its features (globally pooled 512-d ResNet-18 features of
proxies trained 40 epochs); in other features the same weight is another strength. ``ratio``
rescales a term instead: at iteration 0 each class's term is ``ratio`` times its feature-matching
loss L_match = || mean f_real - mean f_syn ||^2 (the part DM and IDM share), and from iteration
1 the weight is ratio * sum_c L_match / sum_c term over iteration 0's classes, fixed for the run.
"""

import logging

import torch
from torch import nn

from ..errors import check_number
from ..runtime import generator
from .base import Plugin

log = logging.getLogger(__name__)


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

    def __init__(self, centralization: float, covariance: float, seed: int, ratio: dict = None):
        self.weights = {
            "centralization": float(
                check_number("plugin.technique.centralization", centralization, 0)
            ),
            "covariance": float(check_number("plugin.technique.covariance", covariance, 0)),
        }
        self.ratio = {
            k: float(check_number(f"plugin.technique.ratio.{k}", v, 0))
            for k, v in (ratio or {}).items()
            if v is not None
        }
        self.sums = {k: 0.0 for k in ("match", *self.ratio)}  # iteration 0's, while calibrating
        self.pool, self.generator, self.proxy = None, generator(seed, "iid/proxy"), None
        self.iteration = 0

    def provide(self, proxy) -> None:
        self.pool = proxy

    def uses(self, term: str) -> bool:
        return self.weights[term] > 0 or term in self.ratio

    def begin(self, iteration: int) -> None:
        if self.iteration == 0 and iteration > 0 and self.ratio:
            self.calibrate()
        self.iteration = iteration
        if self.uses("centralization"):
            self.proxy = self.pool.sample(self.generator)

    def calibrate(self) -> None:
        """The weights that made each term ``ratio`` times L_match over iteration 0's classes."""
        if self.sums["match"] <= 0:
            log.warning(
                "IID's ratio found no matching loss at iteration 0 (a run resumed from a "
                "checkpoint without it?): its terms keep weight 0"
            )
        for term, r in self.ratio.items():
            total = self.sums[term]
            self.weights[term] = r * self.sums["match"] / total if total > 0 else 0.0
            log.info(
                "IID %s weight %.4g: %.4g x L_match at iteration 0", term, self.weights[term], r
            )

    def class_loss(self, c: int, net, real, syn, syn_images):
        terms = {}
        if self.uses("covariance"):
            terms["covariance"] = covariance_gap(feature_map(net, real), feature_map(net, syn))
        if self.uses("centralization"):
            terms["centralization"] = centralization(self.proxy.embed(syn_images))
        calibrating = self.iteration == 0 and self.ratio
        if calibrating:
            match = (real.mean(0) - syn.mean(0)).pow(2).sum().item()
            self.sums["match"] += match
        loss = 0.0
        for term, value in terms.items():
            weight = self.weights[term]
            if calibrating and term in self.ratio:
                size = value.item()
                self.sums[term] += size
                weight = self.ratio[term] * match / size if size > 0 else 0.0
            loss = loss + weight * value
        return loss

    def state_dict(self) -> dict:
        return {
            "generator": self.generator.get_state(),
            "weights": dict(self.weights),
            "sums": dict(self.sums),
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.weights.update(state.get("weights", {}))
        self.sums.update(state.get("sums", {}))
        self.iteration = state.get("iteration", self.iteration)
