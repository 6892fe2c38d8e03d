"""Class-aware conditional mutual information (CMI) of a synthetic set.

Zhong et al., "Going Beyond Feature Similarity: Effective Dataset Distillation based on
Class-Aware Conditional Mutual Information", ICLR 2025:

    P_s        = softmax(z_s)                                          (Eq. 4)
    Q_y        = (1/|S_y|) sum_{s in S_y} P_s                          class centroid
    CMI_emp(S) = (1/|S|) sum_y sum_{s in S_y} KL(P_s || Q_y)           (Eq. 10)

z_s is a proxy network's output for synthetic image s: its penultimate features
(``space="feature"``, the paper's preferred setting) or its class logits (``"probability"``).
The centroid is not detached, so gradients flow through P_s and Q_y alike (since Q_y minimizes
sum_s KL(P_s || Q) over Q, the centroid's share of the total gradient is zero: keeping it in
the graph is faithful to the paper and changes no update). Everything is
computed in log space (log-softmax, logsumexp for the centroid), so the value stays finite
when softmax outputs underflow to zero.
"""

import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .cmi_weight import AutoWeight


def _class_kl_sum(outputs: torch.Tensor) -> torch.Tensor:
    """sum_s KL(P_s || Q) for the outputs [n, M] of one class, Q their mean distribution."""
    # Half-precision outputs (mixed precision) are promoted; float64 stays float64.
    log_p = F.log_softmax(
        outputs.float() if outputs.dtype in (torch.float16, torch.bfloat16) else outputs, dim=1
    )
    log_q = torch.logsumexp(log_p, dim=0, keepdim=True) - math.log(outputs.shape[0])
    # A sum of KL divergences is >= 0; clamping removes float rounding below zero (~1e-8).
    return (log_p.exp() * (log_p - log_q)).sum().clamp_min(0.0)


def empirical_cmi(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CMI_emp (Eq. 10) of outputs [N, M] with integer labels [N], in any order, in nats."""
    if outputs.ndim != 2 or labels.shape != outputs.shape[:1]:
        raise ValueError(
            f"expected outputs [N, M] and labels [N], got {tuple(outputs.shape)} "
            f"and {tuple(labels.shape)}"
        )
    total = sum(_class_kl_sum(outputs[labels == y]) for y in labels.unique())
    return total / outputs.shape[0]


def per_class_cmi(embed, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The same value as ``empirical_cmi(embed(images), labels)``, one class at a time.

    Algorithm 1 of the paper (disentangled CMI): the proxy sees one class at a time, and with
    activation checkpointing only each class's scalar term is kept for backward, which recomputes
    the class's activations when it reaches them. Peak memory is thus bounded by one class, and
    the result is an ordinary differentiable scalar.
    """

    def class_term(x):
        return _class_kl_sum(embed(x))

    total = sum(
        checkpoint(class_term, images[labels == y], use_reentrant=False) for y in labels.unique()
    )
    return total / images.shape[0]


SPACES = {"feature": "embed", "probability": "forward"}


class CMITerm:
    """The CMI regularizer of Eq. 11, built from ``cmi=...`` (conf/cmi/) with the run's proxy
    ``pool`` and a seeded ``generator``.

    ``draw`` picks one proxy uniformly; ``__call__`` returns the unweighted, differentiable CMI
    under a drawn proxy (a fresh draw unless one is given: the loop reuses a draw for the steps
    of one iteration where the method's reference does); ``measure`` is the detached CMI under
    the pool's first proxy, the value the paper's Tables 10-11 report. ``weight`` and ``every``
    are the loop's: it adds ``weight * CMI`` in every ``every``-th iteration, and never calls the
    term when the weight is 0. ``weight="auto"`` leaves the weight to ``auto``, an
    ``AutoWeight`` built from ``cmi.auto`` (cmidd/cmi_weight.py), and ``weight`` is then 0.
    ``pretrained`` says which pool was built (trained or not).
    """

    def __init__(
        self,
        pool,
        generator: torch.Generator,
        space: str = "feature",
        per_class: bool = False,
        weight: float = 0.0,
        every: int = 1,
        pretrained: bool = True,
        name: str = None,
        auto: dict = None,
    ):
        if space not in SPACES:
            raise ValueError(f"cmi.space={space!r} is not one of {sorted(SPACES)}")
        self.pool, self.method, self.generator = pool, SPACES[space], generator
        self.auto = AutoWeight(**auto) if weight == "auto" else None
        self.weight = 0.0 if self.auto else float(weight)
        self.per_class, self.every = per_class, every
        self.pretrained, self.name = pretrained, name

    def _cmi(self, proxy, images, labels) -> torch.Tensor:
        outputs = getattr(proxy, self.method)
        if self.per_class:
            return per_class_cmi(outputs, images, labels)
        return empirical_cmi(outputs(images), labels)

    @property
    def active(self) -> bool:
        """Whether the loop adds the term at all (a positive or automatic weight)."""
        return self.auto is not None or self.weight > 0

    def draw(self):
        return self.pool.sample(self.generator)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, proxy=None) -> torch.Tensor:
        return self._cmi(self.draw() if proxy is None else proxy, images, labels)

    @torch.no_grad()
    def measure(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        return self._cmi(self.pool.first, images, labels).item()
