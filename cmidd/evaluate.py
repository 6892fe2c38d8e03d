"""The evaluation protocol: train fresh networks on the synthetic set, test on the real test set."""
import statistics

import torch

from .runtime import build_seeded, generator
from .train import accuracy, train_classifier


class Evaluator:
    """Trains ``models`` freshly initialized networks of each architecture in ``nets`` on a
    synthetic set (SGD, lr decayed by 10 at half the epochs, DSA on training batches) and reports
    their test accuracies."""

    def __init__(self, nets: dict, models: int, epochs: int, lr: float, momentum: float,
                 weight_decay: float, batch_size: int, augment=None, every: int = 0):
        self.nets, self.models, self.epochs = dict(nets), models, epochs
        self.hyper = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, batch_size=batch_size)
        self.augment, self.every = augment, every

    def due(self, iteration: int, last: int) -> bool:
        """Whether the accuracy curve has a point at ``iteration`` (the last one always does)."""
        return iteration == last or (self.every > 0 and iteration % self.every == 0)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, real, seed: int,
                 stream: str = "eval") -> dict:
        """Each network's initialization, batch order and augmentation come from its own stream
        (``stream``/arch/k of ``seed``), so results do not depend on what ran before."""
        images, labels = images.detach(), labels.detach()
        c, h, _ = real.shape
        results = {}
        for arch, make_net in self.nets.items():
            runs = []
            for k in range(self.models):
                name = f"{stream}/{arch}/{k}"
                net = build_seeded(make_net, seed, name, in_channels=c,
                                   num_classes=real.num_classes, image_size=h).to(images.device)
                train_classifier(net, images, labels, self.epochs, generator=generator(seed, name),
                                 augment=self.augment, lr_decay_epoch=self.epochs // 2, **self.hyper)
                runs.append(accuracy(net, real.test_images, real.test_labels))
            results[arch] = {"mean": statistics.fmean(runs),
                             "std": statistics.pstdev(runs) if len(runs) > 1 else 0.0, "runs": runs}
        return results
