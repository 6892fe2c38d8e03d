"""Training and testing a classifier on tensors that already sit on the device."""
import torch
from torch import nn
from torch.nn import functional as F


def train_classifier(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int,
                     lr: float, momentum: float, weight_decay: float, batch_size: int,
                     generator: torch.Generator, augment=None, lr_decay_epoch: int = None,
                     on_epoch=None) -> nn.Module:
    """SGD with cross-entropy; lr divided by 10 after ``lr_decay_epoch`` epochs, if given (with
    a fresh optimizer, so momentum restarts, as in the DC/DM evaluation code).

    Batches are slices of one permutation per epoch drawn from ``generator``; ``augment``
    (a DSA) is applied to each batch with draws from the same generator. ``on_epoch(epoch)`` is
    called after each epoch (MTT's experts record their parameters there).
    """
    def sgd(rate):
        return torch.optim.SGD(net.parameters(), lr=rate, momentum=momentum, weight_decay=weight_decay)

    optimizer = sgd(lr)
    net.train()
    for epoch in range(epochs):
        if epoch == lr_decay_epoch:
            optimizer = sgd(lr * 0.1)
        order = torch.randperm(len(images), generator=generator).to(images.device)
        for start in range(0, len(images), batch_size):
            index = order[start:start + batch_size]
            x = images[index]
            if augment is not None:
                x = augment(x, generator)
            loss = F.cross_entropy(net(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if on_epoch is not None:
            on_epoch(epoch)
    return net


@torch.no_grad()
def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    was_training = net.training
    net.eval()
    correct = sum((net(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum().item()
                  for i in range(0, len(images), batch_size))
    net.train(was_training)
    return correct / len(images)
