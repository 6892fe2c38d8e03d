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

import logging
import math

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .cmi_weight import AutoWeight
from .config import missing_entry
from .errors import UserError, check_choice, check_number
from .fused import fused


def _class_kl_sum(outputs: torch.Tensor) -> torch.Tensor:
    """sum_s KL(P_s || Q) for the outputs [n, M] of one class, Q their mean distribution."""
    # Half-precision outputs (mixed precision) are promoted; float64 stays float64.
    log_p = F.log_softmax(
        outputs.float() if outputs.dtype in (torch.float16, torch.bfloat16) else outputs, dim=1
    )
    log_q = torch.logsumexp(log_p, dim=0, keepdim=True) - math.log(outputs.shape[0])
    # A sum of KL divergences is >= 0; clamping removes float rounding below zero (~1e-8).
    return (log_p.exp() * (log_p - log_q)).sum().clamp_min(0.0)


def empirical_cmi(outputs: torch.Tensor, labels: torch.Tensor, total: int = None) -> torch.Tensor:
    """CMI_emp (Eq. 10) of outputs [N, M] with integer labels [N], in any order, in nats;
    ``total``: the |S| of Eq. 10 when the outputs are some classes of a larger set (a shard)."""
    if outputs.ndim != 2 or labels.shape != outputs.shape[:1]:
        raise ValueError(
            f"expected outputs [N, M] and labels [N], got {tuple(outputs.shape)} "
            f"and {tuple(labels.shape)}"
        )
    kl = sum(_class_kl_sum(outputs[labels == y]) for y in labels.unique())
    return kl / (total or outputs.shape[0])


def per_class_cmi(embed, images: torch.Tensor, labels: torch.Tensor, total: int = None):
    """The same value as ``empirical_cmi(embed(images), labels, total)``, one class at a time.

    Algorithm 1 of the paper (disentangled CMI): the proxy sees one class at a time, and with
    activation checkpointing only each class's scalar term is kept for backward, which recomputes
    the class's activations when it reaches them. Peak memory is thus bounded by one class, and
    the result is an ordinary differentiable scalar.
    """

    def class_term(x):
        return _class_kl_sum(embed(x))

    kl = sum(
        checkpoint(class_term, images[labels == y], use_reentrant=False) for y in labels.unique()
    )
    return kl / (total or images.shape[0])


SPACES = {"feature": "embed", "probability": "forward"}
log = logging.getLogger(__name__)


MEASURE_CHUNK = 1024  # images per proxy forward pass when measuring a set's CMI


@torch.no_grad()
def set_cmi(outputs, images: torch.Tensor, labels: torch.Tensor) -> float:
    """A set's CMI_emp under ``outputs`` (a proxy's ``embed`` or ``forward``), detached. In
    chunks: a set as large as the training split (method=whole_dataset) in one forward pass
    would need gigabytes of activations; without gradients the result is the same."""
    embedded = torch.cat([outputs(chunk) for chunk in images.split(MEASURE_CHUNK)])
    return empirical_cmi(embedded, labels).item()


class CMITerm:
    """The CMI regularizer of Eq. 11 with its schedule, built from ``cmi=...`` (conf/cmi/) and a
    seeded ``generator``; every run has one (``cmi=none``: weight 0).

    ``weight`` is a number >= 0, or ``"auto"``: then an ``AutoWeight`` built from ``auto``
    (cmidd/cmi_weight.py) sets it from the run's gradients (``weigh``); so it does when the
    method's table has no weight for the run (``fallback`` says why). The loop adds
    ``weight * CMI`` at the steps ``due`` says (every ``every``-th iteration) and never calls the
    term when it is not ``active``. ``pretrained`` says which pool the run gives it (``use``):
    the proxies pre-trained on the real data, or untrained ones. ``draw`` picks one proxy
    uniformly; ``__call__`` returns the unweighted, differentiable CMI under a drawn proxy (a
    fresh draw unless one is given: the loop reuses a draw for the steps of one iteration where
    the method's reference does); ``measure`` is the detached CMI of a set (the paper's Tables
    10-11) under the first proxy of a measuring pool disjoint from the optimized one, or None
    without one.
    """

    def __init__(
        self,
        generator: torch.Generator,
        space: str = "feature",
        per_class: bool = False,
        weight: float = 0.0,
        every: int = 1,
        pretrained: bool = True,
        name: str = None,
        auto: dict = None,
    ):
        self.method = SPACES[check_choice("cmi.space", space, tuple(SPACES))]
        self.every = check_number("cmi.every", every, 1, integer=True)
        # Without an entry in the method's table, the weight is auto's (said once, and recorded).
        self.fallback = missing_entry(weight, hint=False)
        if self.fallback:
            log.warning("cmi.weight: %s, so cmi.weight=auto sets it", self.fallback)
            weight = "auto"
        if isinstance(weight, str) and weight != "auto":
            raise UserError(f"cmi.weight={weight} is invalid: it must be a number >= 0 or auto")
        self.auto = AutoWeight(**auto) if weight == "auto" else None
        self.fixed = 0.0 if self.auto else float(check_number("cmi.weight", weight, 0))
        self.per_class, self.pretrained, self.name = per_class, pretrained, name
        self.generator, self.pool, self.measuring = generator, None, None

    @property
    def active(self) -> bool:
        """Whether the loop adds the term at all (a positive or automatic weight)."""
        return self.auto is not None or self.fixed > 0

    @property
    def weight(self) -> float:
        """The weight in use (``auto``'s current value)."""
        return self.auto.value if self.auto else self.fixed

    def use(self, pool, measuring=None) -> None:
        """The proxy pool the term reads (None: it must not be added), and the pool that
        ``measure`` reads: networks of the same recipe but other seeds, so that the set's CMI is
        never graded by a proxy it was optimized against (None: not measured)."""
        self.pool, self.measuring = pool, measuring

    def due(self, iteration: int, step: int, every_step: bool) -> bool:
        """Whether the term is added at ``step`` of ``iteration`` (steps after the first only
        for a method that adds it at ``every_step``)."""
        return self.active and iteration % self.every == 0 and (step == 0 or every_step)

    def weigh(self, distill_grad: torch.Tensor, cmi_grad: torch.Tensor) -> float:
        """``cmi.weight=auto``: the weight for this step, from the two gradients."""
        return self.auto.update(distill_grad, cmi_grad)

    def end_iteration(self) -> dict:
        """What the iteration logs of the schedule (``auto``'s weight)."""
        if self.auto is None:
            return {}
        self.auto.end_iteration()
        return {"cmi/weight": self.auto.value}

    def _cmi(self, proxy, images, labels, total=None) -> torch.Tensor:
        outputs = getattr(fused(proxy), self.method)
        if self.per_class:
            return per_class_cmi(outputs, images, labels, total)
        return empirical_cmi(outputs(images), labels, total)

    def draw(self):
        return self.pool.sample(self.generator)

    def __call__(self, images, labels, proxy=None, total: int = None) -> torch.Tensor:
        """``total``: the size of the whole set when ``images`` are a shard's classes."""
        return self._cmi(self.draw() if proxy is None else proxy, images, labels, total)

    @torch.no_grad()
    def measure(self, images: torch.Tensor, labels: torch.Tensor, in_pool: bool = False):
        """The set's CMI under the measuring pool's first proxy (``in_pool``: the first proxy
        of the pool the term optimizes against, the value earlier versions reported)."""
        pool = self.pool if in_pool else self.measuring
        return None if pool is None else set_cmi(getattr(pool.first, self.method), images, labels)

    def state_dict(self) -> dict:
        """The proxy draws' generator and ``auto``'s state (between iterations)."""
        auto = None if self.auto is None else self.auto.state_dict()
        return {"generator": self.generator.get_state(), "auto": auto}

    def load_state_dict(self, state: dict) -> None:
        if state["generator"] is not None:  # None: an older run without a pool
            self.generator.set_state(state["generator"])
        if self.auto is not None and state.get("auto"):
            self.auto.load_state_dict(state["auto"])
