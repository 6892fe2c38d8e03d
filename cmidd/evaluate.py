"""The evaluation protocol: train fresh networks on the synthetic set, test on the real test set."""
import logging
import statistics

import torch

from .ensemble import ensemble_accuracy, train_ensemble
from .progress import Progress, epoch_logger
from .runtime import build_seeded, generator
from .train import accuracy, train_classifier

log = logging.getLogger(__name__)

VECTORIZE = ("auto", True, False)


class Evaluator:
    """Trains ``models`` freshly initialized networks of each architecture in ``nets`` on a
    synthetic set (SGD, lr decayed by 10 at half the epochs, DSA on training batches) and reports
    their test accuracies.

    ``vectorize`` trains the ``models`` networks of an architecture at once as one vectorized
    model (``cmidd.ensemble``) instead of one after another; the results are the same up to
    floating-point order. ``auto`` vectorizes on CUDA only, where it measured faster (README).
    """

    def __init__(self, nets: dict, models: int, epochs: int, lr: float, momentum: float,
                 weight_decay: float, batch_size: int, augment=None, every: int = 0,
                 vectorize="auto"):
        if vectorize not in VECTORIZE:
            raise ValueError(f"eval.vectorize={vectorize!r} is not one of auto, true, false")
        self.nets, self.models, self.epochs = dict(nets), models, epochs
        self.hyper = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, batch_size=batch_size)
        self.augment, self.every, self.vectorize = augment, every, vectorize

    def due(self, iteration: int, last: int) -> bool:
        """Whether the accuracy curve has a point at ``iteration`` (the last one always does)."""
        return iteration == last or (self.every > 0 and iteration % self.every == 0)

    def vectorized(self, device: torch.device) -> bool:
        if self.vectorize == "auto":
            return device.type == "cuda" and self.models > 1
        return self.vectorize

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, real, seed: int,
                 stream: str = "eval", lr: float = None) -> dict:
        """Each network's initialization, batch order and augmentation come from its own stream
        (``stream``/arch/k of ``seed``), so results do not depend on what ran before, nor on
        whether the networks are trained together. ``lr`` replaces ``eval.lr`` for a set that
        carries its own learned learning rate (MTT)."""
        images, labels = images.detach(), labels.detach()
        c, h, _ = real.shape
        results = {}
        progress = Progress(len(self.nets) * self.models, unit="net", every=30.0)
        for a, (arch, make_net) in enumerate(self.nets.items()):
            names = [f"{stream}/{arch}/{k}" for k in range(self.models)]
            nets = [build_seeded(make_net, seed, name, in_channels=c, num_classes=real.num_classes,
                                 image_size=h).to(images.device) for name in names]
            generators = [generator(seed, name) for name in names]
            hyper = self.hyper if lr is None else {**self.hyper, "lr": lr}
            train = dict(epochs=self.epochs, augment=self.augment,
                         lr_decay_epoch=self.epochs // 2, **hyper)
            if self.vectorized(images.device):
                ensemble = train_ensemble(nets, images, labels, generators=generators, **train,
                                          on_epoch=epoch_logger(log, f"evaluating {arch}",
                                                                self.epochs, every=60.0))
                runs = ensemble_accuracy(ensemble, real.test_images, real.test_labels)
                progress.log(log, (a + 1) * self.models, "evaluated %s", arch)
            else:
                runs = []
                for k, (net, g) in enumerate(zip(nets, generators)):
                    report = epoch_logger(log, f"evaluating {arch} {k}", self.epochs, every=60.0)
                    train_classifier(net, images, labels, generator=g, on_epoch=report, **train)
                    runs.append(accuracy(net, real.test_images, real.test_labels))
                    progress.log(log, a * self.models + k + 1, "evaluated %s %d", arch, k)
            results[arch] = {"mean": statistics.fmean(runs),
                             "std": statistics.pstdev(runs) if len(runs) > 1 else 0.0, "runs": runs}
        return results
