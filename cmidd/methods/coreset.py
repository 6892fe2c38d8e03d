"""Coreset baselines (the first rows of the paper's Table 1): IPC real images per class, selected
rather than synthesized, then evaluated like any synthetic set. They run no iterations and take
no CMI term.

- ``Random``: uniform per class (seeded).
- ``Herding`` (Welling, ICML 2009; as iCaRL and the DC/DM papers' baselines use it): greedy, each
  pick the image whose feature brings the running mean of the picks closest to the class mean.
- ``KCenter`` (Sener & Savarese, ICLR 2018): greedy k-center, each pick the image farthest from
  the picks so far; the first is drawn at random.
- ``Forgetting`` (Toneva et al., ICLR 2019): a network trained on the real data, counting per
  image the presentations at which it went from correctly to wrongly classified; the most
  forgotten images per class are kept (never learned ones count as forgotten most often).

Herding and k-center work in the feature space of a network trained on the real data: the
penultimate features of the first proxy of the run's pool (``needs``).
"""

import logging

import torch
from torch.nn import functional as F

from ..batching import infer
from ..progress import epoch_logger
from ..runtime import build_seeded, generator
from ..synthetic import SyntheticSet
from .base import Method

log = logging.getLogger(__name__)


def herding(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of ``k`` rows of ``features`` [n, d] chosen by herding (no repeats)."""
    mean = features.mean(0)
    chosen, total = [], torch.zeros_like(mean)
    available = torch.ones(len(features), dtype=torch.bool, device=features.device)
    for step in range(1, min(k, len(features)) + 1):
        distance = (mean - (total + features) / step).norm(dim=1)
        distance[~available] = float("inf")
        pick = int(distance.argmin())
        chosen.append(pick)
        total += features[pick]
        available[pick] = False
    return torch.tensor(chosen, dtype=torch.long)


def k_center(features: torch.Tensor, k: int, first: int) -> torch.Tensor:
    """Indices of ``k`` rows of ``features`` [n, d] chosen by greedy k-center from ``first``."""
    chosen = [first]
    nearest = (features - features[first]).norm(dim=1)
    for _ in range(min(k, len(features)) - 1):
        pick = int(nearest.argmax())
        chosen.append(pick)
        nearest = torch.minimum(nearest, (features - features[pick]).norm(dim=1))
    return torch.tensor(chosen, dtype=torch.long)


def forgetting_events(correct: torch.Tensor) -> torch.Tensor:
    """Forgetting events per example from its correctness at each presentation [epochs, n]: a
    transition from correct to wrong. Examples never classified correctly get the most (epochs)."""
    events = (correct[:-1] & ~correct[1:]).sum(0)
    never = ~correct.any(0)
    return torch.where(never, torch.full_like(events, correct.shape[0]), events)


class Selection(Method):
    """A selection of real images: no iterations, no optimizer, no CMI term. ``select(real,
    ipc, generator)`` returns, per class, the indices into ``real.train[c]`` to keep."""

    iterates = False
    takes_cmi = False

    def __init__(self, real, seed: int, device):
        self.real, self.seed, self.device = real, seed, device

    def initial_set(self, real, ipc: int, generator, classes=None, indices=None):
        """The selected real images (init, factor and lr do not apply to a selection)."""
        chosen = self.select(real, ipc, generator)
        images = torch.cat(
            [real.train[c][index.to(real.train[c].device)] for c, index in enumerate(chosen)]
        )
        labels = torch.arange(real.num_classes).repeat_interleave(ipc)
        synthetic = SyntheticSet(images, labels.to(images.device), real.mean, real.std)
        synthetic.whitening = real.whitening
        return synthetic

    def optimizer(self, synthetic):
        return None

    def losses(self, synthetic, iteration: int):
        return iter(())  # nothing to optimize

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Random(Selection):
    def select(self, real, ipc: int, gen) -> list:
        return [torch.randperm(len(x), generator=gen)[:ipc] for x in real.train]


class _FeatureSelection(Selection):
    """Selection in the feature space of the pool's first proxy."""

    needs = ("proxy",)

    def provide(self, proxy) -> None:
        self.net = proxy.first

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return infer(self.net, images, "embed").float()


class Herding(_FeatureSelection):
    def select(self, real, ipc: int, gen) -> list:
        return [herding(self.features(x), ipc).cpu() for x in real.train]


class KCenter(_FeatureSelection):
    def select(self, real, ipc: int, gen) -> list:
        firsts = [int(torch.randint(len(x), (1,), generator=gen)) for x in real.train]
        return [
            k_center(self.features(x), ipc, f).cpu()
            for x, f in zip(real.train, firsts, strict=True)
        ]


class Forgetting(Selection):
    """Trains ``net`` on the real data (SGD with the given recipe, no augmentation), recording
    each image's correctness every epoch."""

    def __init__(
        self,
        real,
        seed: int,
        device,
        net,
        epochs: int,
        lr: float,
        momentum: float,
        weight_decay: float,
        batch_size: int,
    ):
        super().__init__(real, seed, device)
        self.make_net, self.epochs, self.batch_size = net, epochs, batch_size
        self.sgd = dict(lr=lr, momentum=momentum, weight_decay=weight_decay)

    def _correctness(self, images, labels) -> torch.Tensor:
        net = build_seeded(self.make_net, self.seed, "forgetting/net", **self.real.net_args)
        net = net.to(images.device).train()
        optimizer = torch.optim.SGD(net.parameters(), **self.sgd)
        order_gen = generator(self.seed, "forgetting/order")
        correct = torch.zeros(self.epochs, len(images), dtype=torch.bool)
        report = epoch_logger(log, "forgetting", self.epochs)
        for epoch in range(self.epochs):
            order = torch.randperm(len(images), generator=order_gen)
            for index in order.split(self.batch_size):
                logits = net(images[index.to(images.device)])
                target = labels[index.to(labels.device)]
                correct[epoch, index] = (logits.argmax(1) == target).cpu()
                loss = F.cross_entropy(logits, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            report(epoch)
        return correct

    def select(self, real, ipc: int, gen) -> list:
        images, labels = real.train_tensors()
        events = forgetting_events(self._correctness(images, labels))
        chosen, start = [], 0
        for x in real.train:
            counts = events[start : start + len(x)].float()
            start += len(x)
            ties = torch.rand(len(x), generator=gen)  # random order among equal counts
            chosen.append(torch.argsort(counts + ties * 0.5, descending=True)[:ipc])
        return chosen
