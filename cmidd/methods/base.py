"""The interface every base distillation method implements.

A method is built from config (``method.algorithm``, a partial) with the runtime values
``real`` (RealData), ``seed`` and ``device``. The distillation loop owns the synthetic set, its
optimizer and the CMI term; a method only says what its distillation loss is:

    for loss in method.losses(synthetic, iteration):
        ...  # the loop adds weight * CMI to the first loss, backpropagates, steps the optimizer

``losses`` yields one loss per synthetic-set update of the iteration: DM yields one; bi-level
methods (DC/DSA) yield one per outer step and train their network between yields, after the loop
has applied the update. ``multi_formulation`` is True for methods whose stored images decode
into several training images (IDC, IDM), which keeps CMI meaningful at IPC=1.

``state_dict``/``load_state_dict`` hold whatever the method needs to continue bit-identically
after a checkpoint (its random generators, networks it keeps across iterations...).
"""
from typing import Iterator, Protocol

import torch

from ..runtime import generator


class Method(Protocol):
    multi_formulation: bool

    def losses(self, synthetic, iteration: int) -> Iterator[torch.Tensor]:
        ...

    def state_dict(self) -> dict:
        ...

    def load_state_dict(self, state: dict) -> None:
        ...


class RandomStreams:
    """The two streams most methods draw from, real-image sampling and augmentation, derived
    from the run's seed and kept across checkpoints (``state_dict``)."""

    def __init__(self, seed: int, prefix: str):
        self.sampler = generator(seed, f"{prefix}/real")
        self.aug_gen = generator(seed, f"{prefix}/augment")

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.get_state(), "augment": self.aug_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.set_state(state["sampler"])
        self.aug_gen.set_state(state["augment"])
