"""Expert trajectories for trajectory matching (MTT; Cazenavette et al., "Dataset Distillation by
Matching Training Trajectories", CVPR 2022; the reference code's buffer.py).

An expert is a network trained on the real data with plain SGD and DSA; its trajectory is its
flat parameter vector at initialization and after every epoch, a tensor [epochs + 1, P]. The
experts of a dataset are a ``Store`` in ``<cache>/experts/<dataset>/<expert>-<hash>/``: expert
``i`` depends only on (expert seed, i), so a buffer of 10 experts is the first 10 of one of 100
and grows without retraining.
"""

import logging

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..errors import UserError
from ..progress import epoch_logger
from ..runtime import build_seeded, generator
from ..train import accuracy, train_classifier
from .kind import Kind, make_net

log = logging.getLogger(__name__)


def flat_parameters(net) -> torch.Tensor:
    """The network's parameters as one vector, in ``named_parameters`` order, on the CPU."""
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]).cpu()


def trajectory(net, images, labels, recipe: dict, gen, augment, name: str) -> torch.Tensor:
    """Train ``net`` with an expert ``recipe`` (epochs, lr, momentum, weight_decay, batch_size)
    and return its flat parameters at the start and after every epoch, [epochs + 1, P]."""
    snapshots = [flat_parameters(net)]
    report = epoch_logger(log, name, recipe["epochs"])

    def record(epoch):
        snapshots.append(flat_parameters(net))
        report(epoch)

    train_classifier(
        net,
        images,
        labels,
        recipe["epochs"],
        generator=gen,
        lr=recipe["lr"],
        momentum=recipe["momentum"],
        weight_decay=recipe["weight_decay"],
        batch_size=recipe["batch_size"],
        augment=augment,
        on_epoch=record,
    )
    return torch.stack(snapshots)


def _train(node: DictConfig, real, device, train_set, i: int) -> tuple:
    images, labels = train_set()
    recipe = OmegaConf.to_container(node.recipe, resolve=True)
    net = build_seeded(make_net(node), node.seed, f"expert/{i}", **real.net_args).to(device)
    augment = instantiate(node.recipe.augment)
    snapshots = trajectory(
        net, images, labels, recipe, generator(node.seed, f"expert/{i}"), augment, f"expert {i}"
    )
    test = accuracy(net, real.test_images, real.test_labels)
    log.info("expert %d trained for %d epochs: test accuracy %.4f", i, recipe["epochs"], test)
    return snapshots, {
        "net": OmegaConf.to_container(node.net, resolve=True),
        "recipe": recipe,
        "seed": node.seed,
        "epochs": recipe["epochs"],
        "parameters": snapshots.shape[1],
        "test_accuracy": test,
    }


class Trajectories:
    """The experts of a run, loaded once and memory-mapped on the CPU (a paper-scale buffer is
    gigabytes); only the two snapshots an iteration matches go to the device. MTT draws an
    expert uniformly per iteration (with replacement, as the reference's ``--load_all`` path;
    its default walks shuffled files of 10 experts without replacement)."""

    def __init__(self, trajectories: list):
        if not trajectories:
            raise UserError("expert.count=0 is invalid: MTT needs at least one expert")
        self.trajectories = trajectories

    def __len__(self) -> int:
        return len(self.trajectories)

    @property
    def epochs(self) -> int:
        """Epochs recorded (snapshots minus the initialization) by every expert."""
        return min(len(t) for t in self.trajectories) - 1

    @property
    def parameters(self) -> int:
        return self.trajectories[0].shape[1]

    def segment(self, expert: int, start: int, epochs: int, device) -> tuple:
        """Expert ``expert``'s parameters at epoch ``start`` and at ``start + epochs``."""
        trajectory = self.trajectories[expert]
        return trajectory[start].to(device), trajectory[start + epochs].to(device)


KIND = Kind(
    group="expert",
    subdir="experts",
    prefix="expert",
    what="expert buffer",
    size="count",
    task="buffer",
    train=_train,
    load=lambda node, real, device, items: Trajectories(items),
)
