"""DREAM (Liu et al., "DREAM: Efficient Dataset Distillation by Representative Matching",
ICCV 2023) on the gradient-matching methods (IDC, DC, DSA), as in its reference code
(lyq312318224/DREAM, built on IDC: ``new_strategy.py`` and ``condense.py`` L506-645).

Instead of a random real batch, each class is matched to representatives: k-means with as many
centres as the real batch (``batch_real``: DREAM's own, with which IDC then also trains its
network, as in the reference; null: the method's) on the embeddings of all real images of the
class under the *current* matching network, and for each centre the one real image nearest to
it. The clustering is redone every ``interval`` matching steps of an iteration (its first step
included) and kept in between. The synthetic set starts from representatives too: per class, as
many clusters as real images the set starts from (IPC x factor^2, tiled as the method tiles
them), in a freshly initialized, untrained network (``init: true``).

k-means is the reference's algorithm (fast_pytorch_kmeans's defaults: centres started at random
samples, Lloyd steps until the centres move by at most ``tol`` in squared distance, at most
``max_iter`` steps), written out here so that it runs on the run's device and draws from the
run's generator (scikit-learn's runs on the CPU only, and the paper's scale makes 200,000
clusterings of 5,000 images each).
"""

import torch

from ..batching import infer
from ..errors import check_number
from ..runtime import build_seeded, generator
from .base import Plugin


def embed_all(net, images) -> torch.Tensor:
    """Embeddings of all ``images``, the net in eval mode (BatchNorm then uses its running
    statistics rather than each chunk's, and keeps them), restored to its modes after."""
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        return infer(net, images, "embed")
    finally:
        for module, training in modes:
            module.train(training)


def kmeans(
    points: torch.Tensor, n: int, gen: torch.Generator, max_iter: int = 100, tol: float = 1e-4
) -> torch.Tensor:
    """Lloyd's k-means of ``points`` [N, M] from ``n`` distinct random samples: the centres [n, M].
    A centre left without points stays where it was."""
    pick = torch.randperm(len(points), generator=gen)[:n].to(points.device)
    centres = points[pick].clone()
    for _ in range(max_iter):
        assign = torch.cdist(points, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=n).unsqueeze(1)
        moved = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
        shift = (moved - centres).pow(2).sum()
        centres = moved
        if shift <= tol:
            break
    return centres


def representatives(features: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of the samples nearest to the ``n`` k-means centres of ``features`` [N, M], one
    per centre (all samples when there are no more than ``n``)."""
    if n >= len(features):
        return torch.arange(len(features), device=features.device)
    features = features.float()
    return torch.cdist(kmeans(features, n, gen), features).argmin(1)


class DREAM(Plugin):
    """``net``: the matching net's architecture (the method's), for the untrained network that
    picks the initial images."""

    name = "dream"

    def __init__(self, interval: int, seed: int, net, init: bool = True, batch_real: int = None):
        check_number("plugin.technique.interval", interval, 1, integer=True)
        if batch_real is not None:
            check_number("plugin.technique.batch_real", batch_real, 1, integer=True)
        self.interval, self.init, self.batch_real = interval, init, batch_real
        self.make_net, self.seed, self.init_net = net, seed, None
        self.generator = generator(seed, "dream/kmeans")
        self.steps, self.chosen = {}, {}  # per class: matching steps this iteration, indices

    def begin(self, iteration: int) -> None:
        self.steps = {}

    def real_batch(self, c: int, real, net, n: int):
        images = real.train[c]
        step = self.steps.get(c, 0)
        self.steps[c] = step + 1
        if step % self.interval == 0:
            self.chosen[c] = representatives(embed_all(net, images), n, self.generator)
        return images[self.chosen[c].to(images.device)]

    def initial_images(self, c: int, real, n: int):
        if not self.init:
            return None
        if self.init_net is None:  # untrained: it depends on (seed, name) alone
            net = build_seeded(self.make_net, self.seed, "dream/init", **real.net_args)
            self.init_net = net.to(real.test_images.device).eval()
        images = real.train[c]
        chosen = representatives(embed_all(self.init_net, images), n, self.generator)
        return images[chosen.to(images.device)]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
