"""Training several networks of one architecture at once, as one vectorized model (torch.func).

Each network keeps its own parameters, initialization, batch order and augmentation draws: the
result is the same as ``train.train_classifier`` run on each network in turn, up to floating-point
summation order (tested). What changes is that every step is one batched kernel launch for all
networks instead of one per network, which pays off on a GPU and costs on a small CPU
(measurements in the README).
"""

import copy

import torch
from torch.func import functional_call, stack_module_state
from torch.nn import functional as F


class Ensemble:
    """``nets`` (same architecture) as stacked parameters with one vmapped forward."""

    def __init__(self, nets: list):
        self.params, self.buffers = stack_module_state(nets)
        # The template only supplies the forward code; its own weights are never used.
        self.template = copy.deepcopy(nets[0]).to("meta")
        self.size = len(nets)

        def one(params, buffers, x):
            return functional_call(self.template, (params, buffers), (x,))

        self._forward = torch.vmap(one, in_dims=(0, 0, 0))
        self._shared_forward = torch.vmap(one, in_dims=(0, 0, None))

    def __call__(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Logits [networks, batch, classes] for per-network batches ``x`` [networks, batch, ...],
        or for one batch seen by all networks (``shared``)."""
        forward = self._shared_forward if shared else self._forward
        return forward(self.params, self.buffers, x)

    def train(self, mode: bool = True):
        self.template.train(mode)
        return self

    def unstack(self, nets: list) -> list:
        """Copy the trained weights back into ``nets``."""
        for k, net in enumerate(nets):
            state = {name: value[k] for name, value in {**self.params, **self.buffers}.items()}
            net.load_state_dict(state)
        return nets


def train_ensemble(
    nets: list,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    batch_size: int,
    generators: list,
    augment=None,
    schedule=None,
    on_epoch=None,
) -> Ensemble:
    """``train_classifier``'s protocol for all ``nets`` at once; network k draws its batch order
    and augmentation from ``generators[k]`` exactly as it would alone."""
    ensemble = Ensemble(nets).train()
    params = list(ensemble.params.values())

    def sgd(rate):
        # SGD's update is elementwise, so one optimizer over stacked weights equals one per network.
        return torch.optim.SGD(params, lr=rate, momentum=momentum, weight_decay=weight_decay)

    optimizer = sgd(lr)
    for epoch in range(epochs):
        if schedule is not None:
            optimizer = schedule.step(epoch, optimizer, sgd)
        orders = [torch.randperm(len(images), generator=g).to(images.device) for g in generators]
        for start in range(0, len(images), batch_size):
            index = torch.stack([order[start : start + batch_size] for order in orders])
            x = images[index]
            if augment is not None:
                x = torch.stack([augment(batch, g) for batch, g in zip(x, generators, strict=True)])
            logits = ensemble(x)
            # Sum over networks of each network's mean loss: every network gets its own gradient.
            # labels: classes [N] or soft targets [N, classes]
            loss = F.cross_entropy(
                logits.flatten(0, 1), labels[index].flatten(0, 1), reduction="none"
            )
            loss = loss.view(len(nets), -1).mean(1).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if on_epoch is not None:
            on_epoch(epoch)
    return ensemble


@torch.no_grad()
def ensemble_accuracy(
    ensemble: Ensemble, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024
) -> list:
    """Test accuracy of each network of ``ensemble``."""
    ensemble.train(False)
    correct = torch.zeros(ensemble.size, dtype=torch.long, device=images.device)
    for i in range(0, len(images), batch_size):
        logits = ensemble(images[i : i + batch_size], shared=True)
        correct += (logits.argmax(-1) == labels[i : i + batch_size]).sum(1)
    return [count / len(images) for count in correct.tolist()]
