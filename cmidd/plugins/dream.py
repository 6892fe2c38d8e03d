"""DREAM (Liu et al., "DREAM: Efficient Dataset Distillation by Representative Matching",
ICCV 2023) on the gradient-matching methods (IDC, DC, DSA), as in its reference code
(lyq312318224/DREAM, built on IDC: ``new_strategy.py`` and ``condense.py`` L506-645).

Instead of a random real batch, each class is matched to representatives: k-means with
``clusters`` centres (the reference's real batch size; default: the method's ``batch_real``) on
the embeddings of all real images of the class under the *current* matching network, and for
each centre the one real image nearest to it. The clustering is redone every ``interval``
matching steps of an iteration (its first step included) and kept in between. The synthetic
set starts from representatives too: per class, as many clusters as real images the set starts
from (IPC x factor^2, tiled as the method tiles them), in a freshly initialized, untrained
network (``init: true``).

k-means is scikit-learn's (the reference's is fast_pytorch_kmeans: one random start, at most 100
Lloyd steps; scikit-learn's k-means++ start with one run is the comparable setting).
"""

import torch
from sklearn.cluster import KMeans

from ..runtime import generator
from .base import Plugin


@torch.no_grad()
def embed_all(net, images, chunk: int = 1024) -> torch.Tensor:
    return torch.cat([net.embed(images[i : i + chunk]) for i in range(0, len(images), chunk)])


def representatives(features: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Indices of the samples nearest to the ``n`` k-means centres of ``features`` [N, M], one
    per centre (all samples when there are no more than ``n``)."""
    if n >= len(features):
        return torch.arange(len(features), device=features.device)
    points = features.double().cpu().numpy()
    kmeans = KMeans(n_clusters=n, n_init=1, random_state=seed).fit(points)
    centres = torch.from_numpy(kmeans.cluster_centers_).to(features.device, torch.float64)
    return torch.cdist(centres, features.double()).argmin(1)


class DREAM(Plugin):
    name = "dream"

    def __init__(self, interval: int, seed: int, init: bool = True, clusters: int = None):
        if interval < 1:
            raise ValueError(f"plugin.technique.interval={interval} is invalid: it must be >= 1")
        self.interval, self.init, self.clusters = interval, init, clusters
        self.generator = generator(seed, "dream/kmeans")
        self.steps, self.chosen = {}, {}  # per class: matching steps this iteration, indices

    def _seed(self) -> int:
        return int(torch.randint(2**31 - 1, (1,), generator=self.generator))

    def begin(self, iteration: int) -> None:
        self.steps = {}

    def real_batch(self, method, c: int, net):
        images = method.real.train[c]
        step = self.steps.get(c, 0)
        self.steps[c] = step + 1
        if step % self.interval == 0:
            features = embed_all(net, images)
            count = self.clusters or method.batch_real
            self.chosen[c] = representatives(features, count, self._seed())
        return images[self.chosen[c].to(images.device)]

    def initial_images(self, method, c: int, n: int):
        if not self.init:
            return None
        net = method.fresh_network("dream/init").eval()
        images = method.real.train[c]
        return images[representatives(embed_all(net, images), n, self._seed()).to(images.device)]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
