"""Training and testing a classifier on tensors that already sit on the device."""

import math
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from .batching import backward, infer


def cutmix_batch(images, labels, generator, p: float) -> tuple:
    """CutMix (Yun et al., 2019; beta(1, 1)) applied with probability ``p``, as IDC trains its
    networks (its train.py): a box of a shuffled batch is pasted in. Returns the images and the
    (labels, share) pairs whose cross-entropies the loss mixes by the box's share of the image."""
    if torch.rand(1, generator=generator).item() >= p:
        return images, [(labels, 1.0)]
    n, _, h, w = images.shape
    lam = torch.rand(1, generator=generator).item()
    cut_h, cut_w = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
    cy, cx = (torch.randint(s, (1,), generator=generator).item() for s in (h, w))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    perm = torch.randperm(n, generator=generator).to(images.device)
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images[perm, :, top:bottom, left:right]
    kept = 1 - (bottom - top) * (right - left) / (h * w)
    return mixed, [(labels, kept), (labels[perm], 1 - kept)]


def mixed_cross_entropy(targets: list, logits, rows=slice(None)) -> torch.Tensor:
    """sum of share * cross-entropy over the (labels, share) ``targets``, on ``rows``."""
    return sum(share * F.cross_entropy(logits, labels[rows]) for labels, share in targets)


def cutmix_loss(net: nn.Module, images, labels, generator, p: float) -> torch.Tensor:
    """The cross-entropy of ``net`` on ``cutmix_batch``'s images (IDC's training loss)."""
    images, targets = cutmix_batch(images, labels, generator, p)
    return mixed_cross_entropy(targets, net(images))


class StepSchedule:
    """The learning rate multiplied by ``gamma`` at the start of each epoch in ``milestones``
    (0-based). ``restart``: a fresh optimizer at each milestone, so momentum restarts (the
    DC/DM evaluation code); else the optimizer's lr is lowered in place (torch's MultiStepLR,
    as IDC's)."""

    def __init__(self, milestones=(), gamma: float = 0.1, restart: bool = True):
        self.milestones, self.gamma, self.restart = set(int(m) for m in milestones), gamma, restart

    def step(self, epoch: int, optimizer, make):
        """The optimizer to use for ``epoch``; ``make(lr)`` builds a fresh one."""
        if epoch not in self.milestones:
            return optimizer
        lr = optimizer.param_groups[0]["lr"] * self.gamma
        if self.restart:
            return make(lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return optimizer


class CosineSchedule:
    """The learning rate ``lr * (1 + cos(pi * epoch / epochs)) / 2`` at each epoch, set in place
    (torch's CosineAnnealingLR to 0, stepped per epoch; SRe2L's squeeze recipe)."""

    def __init__(self, epochs: int):
        self.epochs, self.base = epochs, None

    def step(self, epoch: int, optimizer, make):
        if self.base is None:
            self.base = optimizer.param_groups[0]["lr"]
        for group in optimizer.param_groups:
            group["lr"] = self.base * (1 + math.cos(math.pi * epoch / self.epochs)) / 2
        return optimizer


def train_classifier(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    generator: torch.Generator,
    augment=None,
    schedule: StepSchedule = None,
    cutmix: float = 0.0,
    on_epoch=None,
    mixed: bool = False,
) -> nn.Module:
    """SGD with cross-entropy (with CutMix at probability ``cutmix``), the learning rate
    following ``schedule`` (constant without one).

    Batches are slices of one permutation per epoch drawn from ``generator``; ``augment``
    (a DSA) is applied to each batch with draws from the same generator. ``on_epoch(epoch)`` is
    called after each epoch (MTT's experts record their parameters there). ``mixed``: the
    forwards in ``precision`` (evaluation training; cmidd.batching).
    """

    def sgd(rate):
        return torch.optim.SGD(
            net.parameters(), lr=rate, momentum=momentum, weight_decay=weight_decay
        )

    optimizer = sgd(lr)
    net.train()
    for epoch in range(epochs):
        if schedule is not None:
            optimizer = schedule.step(epoch, optimizer, sgd)
        order = torch.randperm(len(images), generator=generator).to(images.device)
        for start in range(0, len(images), batch_size):
            index = order[start : start + batch_size]
            x = images[index]
            if augment is not None:
                x = augment(x, generator)
            targets = [(labels[index], 1.0)]
            if cutmix > 0:
                x, targets = cutmix_batch(x, labels[index], generator, cutmix)
            optimizer.zero_grad(set_to_none=True)
            backward(net, x, partial(mixed_cross_entropy, targets), mixed)
            optimizer.step()
        if on_epoch is not None:
            on_epoch(epoch)
    return net


def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Test accuracy of ``net`` in eval mode, restored to its mode after."""
    was_training = net.training
    net.eval()
    try:
        predicted = infer(net, images).argmax(1)
    finally:
        net.train(was_training)
    return (predicted == labels).sum().item() / len(images)
