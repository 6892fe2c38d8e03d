"""Matching Training Trajectories (MTT; Cazenavette et al., "Dataset Distillation by Matching
Training Trajectories", CVPR 2022), as in the reference code's distill.py.

Each iteration draws an expert (cmidd.pretrained.experts) and a start epoch t <
``max_start_epoch``; a
student starts at the expert's parameters theta*_t and takes ``syn_steps`` SGD steps on the
synthetic set, each on ``batch_syn`` images under a fresh per-sample DSA draw, with the set's
learnable learning rate alpha (``SyntheticSet.lr``):

    theta_{n+1} = theta_n - alpha * grad CE(f(aug(x_n); theta_n), y_n),   theta_0 = theta*_t

    L = || theta_N - theta*_{t+M} ||^2 / || theta*_t - theta*_{t+M} ||^2,   M = expert_epochs

The steps are unrolled with ``create_graph``, so the loss reaches the images and alpha; memory
grows linearly with ``syn_steps`` (each step keeps its activations and a copy of the parameters).
"""

import torch
from torch.func import functional_call
from torch.nn import functional as F

from ..errors import UserError, check_number
from ..runtime import build_seeded, generator
from ..synthetic import decode
from .base import Method


class MTT(Method):
    needs = ("expert",)
    learns_lr = True

    def __init__(
        self,
        net,
        augment,
        real,
        seed: int,
        device,
        syn_steps: int,
        expert_epochs: int,
        max_start_epoch: int,
        batch_syn: int = None,
    ):
        for key, value in (
            ("syn_steps", syn_steps),
            ("expert_epochs", expert_epochs),
            ("max_start_epoch", max_start_epoch),
            ("batch_syn", 1 if batch_syn is None else batch_syn),
        ):
            check_number(f"method.algorithm.{key}", value, 1, integer=True)
        # Only the architecture is used: the parameters come from the experts, then the unroll.
        self.student = build_seeded(net, seed, "mtt/student", **real.net_args).to(device).train()
        self.names = [name for name, _ in self.student.named_parameters()]
        self.shapes = [p.shape for p in self.student.parameters()]
        self.buffers = dict(self.student.named_buffers())
        self.augment, self.device, self.real = augment, device, real
        self.syn_steps, self.expert_epochs = syn_steps, expert_epochs
        self.max_start_epoch, self.batch_syn = max_start_epoch, batch_syn
        self.sampler = generator(seed, "mtt/experts")
        self.aug_gen = generator(seed, "mtt/augment")

    def provide(self, expert) -> None:
        """``expert``: the experts' trajectories (``cmidd.pretrained.experts``)."""
        size = sum(p.numel() for p in self.student.parameters())
        if size != expert.parameters:
            raise UserError(
                f"the experts have {expert.parameters} parameters, the student "
                f"net {size}: method.algorithm.net must be the experts' (expert.net)"
            )
        needed = self.max_start_epoch - 1 + self.expert_epochs
        if needed > expert.epochs:
            raise UserError(
                f"method.algorithm.max_start_epoch={self.max_start_epoch} with expert_epochs="
                f"{self.expert_epochs} needs experts trained for {needed} epochs; they have "
                f"{expert.epochs} (raise expert.recipe.epochs)"
            )
        self.trajectories = expert

    def _forward(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        pieces = flat.split([shape.numel() for shape in self.shapes])
        params = {
            name: piece.view(shape)
            for name, piece, shape in zip(self.names, pieces, self.shapes, strict=True)
        }
        return functional_call(self.student, {**params, **self.buffers}, (x,))

    def _batches(self, n: int, size: int = None):
        """Index batches of ``size`` over shuffled passes of the set, as the reference does."""
        size = size or n
        while True:
            yield from torch.randperm(n, generator=self.sampler).to(self.device).split(size)

    def losses(self, synthetic, iteration: int):
        buffer = self.plugin.trajectories(synthetic, iteration, self.real)
        buffer = self.trajectories if buffer is None else buffer  # a plug-in's stage's own
        expert = torch.randint(len(buffer), (1,), generator=self.sampler).item()
        low, high = self.plugin.start_epochs(iteration) or (0, self.max_start_epoch)
        start = low + torch.randint(high - low, (1,), generator=self.sampler).item()
        theta_start, theta_target = buffer.segment(expert, start, self.expert_epochs, self.device)
        images, labels = synthetic.decoded()
        batch = self.batch_syn
        stage = self.plugin.stage(synthetic, iteration)
        if stage is not None:  # a plug-in's subset of the set, its frozen part included
            visible = synthetic.images[stage.visible], synthetic.labels[stage.visible]
            images, labels = decode(*visible, synthetic.factor)
            batch = min(stage.batch, self.batch_syn or stage.batch)  # the table's, if smaller
        theta = theta_start.clone().requires_grad_(True)
        batches = self._batches(len(images), batch)
        for _ in range(self.syn_steps):
            index = next(batches)
            logits = self._forward(theta, self.augment(images[index], self.aug_gen))
            (grad,) = torch.autograd.grad(
                F.cross_entropy(logits, labels[index]), theta, create_graph=True
            )
            theta = theta - synthetic.lr * grad
        yield (theta - theta_target).pow(2).sum() / (theta_start - theta_target).pow(2).sum()

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.get_state(), "augment": self.aug_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.set_state(state["sampler"])
        self.aug_gen.set_state(state["augment"])
