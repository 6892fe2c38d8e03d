"""The interface every base distillation method implements.

A method is built from config (``method.algorithm``, a partial) with the runtime values
``real`` (RealData), ``seed`` and ``device``. The distillation loop owns the synthetic set, its
optimizer and the CMI term; a method only says what its distillation loss is:

    for loss in method.losses(synthetic, iteration):
        # the loop adds weight * CMI where the method's CMI schedule says, then
        # zero_grad(); backward(); optimizer.step()  -- before the generator resumes
        ...

``losses`` yields one loss per synthetic-set update of the iteration: DM, IDM and MTT yield one;
DC/DSA yield one per outer step and IDC one per matching step, training their network between
yields, after the loop has applied the update (so the code after a ``yield`` sees the updated
images).

Where the CMI term enters (Eq. 11), as each method's reference code has it:

- ``cmi_every_step``: added to every yielded loss (DC/DSA: before each of the ``outer_loop``
  image updates; IDC: each matching step), else only to the first loss of an iteration;
- ``new_proxy_every_step``: a proxy is drawn for every step that adds CMI (IDC), else one proxy
  is drawn per iteration and used for all its steps (DC/DSA).

``state_dict``/``load_state_dict`` hold whatever the method needs to continue bit-identically
after a checkpoint (its random generators, networks it keeps across iterations...).
"""

from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch

from ..plugins.base import Plugin
from ..runtime import build_seeded, generator
from ..synthetic import SyntheticSet


class Method(ABC):
    """Base of every method; the class attributes are the defaults (see the module docstring)."""

    cmi_every_step = False
    new_proxy_every_step = False
    iterates = True  # False: the set is made by initial_set alone (the coreset baselines)
    plugin = Plugin()  # plugin=none; a technique attaches itself (cmidd.plugins)

    def initial_set(
        self, real, ipc: int, generator, init: str = "real", factor: int = 1, lr: float = None
    ):
        """The synthetic set the iterations start from: ``ipc`` images per class from distinct
        random real images (``factor``^2 of them tiled per stored image) or noise; the coreset
        baselines select real images instead; a plug-in technique may choose the real images."""

        def pick(c: int, n: int) -> torch.Tensor:
            chosen = self.plugin.initial_images(self, c, n)
            return real.sample(c, n, generator) if chosen is None else chosen

        return SyntheticSet.from_real(real, ipc, generator, init, factor, lr, pick)

    @abstractmethod
    def losses(self, synthetic, iteration: int) -> Iterator[torch.Tensor]:
        """One loss per synthetic-set update of ``iteration``."""

    def finish(self, synthetic) -> None:  # noqa: B027 -- optional: most methods have no last stage
        """After the last iteration, before the final evaluation (SRe2L relabels there)."""

    @abstractmethod
    def state_dict(self) -> dict: ...

    @abstractmethod
    def load_state_dict(self, state: dict) -> None: ...


class ClassMatching(Method):
    """What DM and DC/DSA share: a real-image sampler and an augmentation stream derived from the
    seed (checkpointable with ``state_dict``), and per-class pairs of real and synthetic batches
    under one shared (siamese) augmentation draw."""

    def __init__(self, real, augment, batch_real: int, seed: int, device, prefix: str):
        self.real, self.augment, self.batch_real = real, augment, batch_real
        self.seed, self.device = seed, device
        self.sampler = generator(seed, f"{prefix}/real")
        self.aug_gen = generator(seed, f"{prefix}/augment")

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.get_state(), "augment": self.aug_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.set_state(state["sampler"])
        self.aug_gen.set_state(state["augment"])

    def fresh_network(self, name: str):
        """A network of ``make_net`` initialized from (seed, name), on the device."""
        c, h, _ = self.real.shape
        return build_seeded(
            self.make_net,
            self.seed,
            name,
            in_channels=c,
            num_classes=self.real.num_classes,
            image_size=h,
        ).to(self.device)

    def class_pairs(self, synthetic, net, syn_max: int = None):
        """(class, augmented real batch, augmented synthetic batch, synthetic labels) per class;
        with ``syn_max``, at most that many random (decoded) synthetic images per class. The real
        images are random unless the plug-in chooses them (by the matching ``net``)."""
        images, labels = synthetic.decoded()
        for c in range(self.real.num_classes):
            real = self.plugin.real_batch(self, c, net)
            if real is None:
                real = self.real.sample(c, self.batch_real, self.sampler)
            syn = images[labels == c]
            if syn_max is not None and len(syn) > syn_max:
                syn = syn[torch.randperm(len(syn), generator=self.sampler)[:syn_max].to(syn.device)]
            draw = self.augment.draw(
                max(len(real), len(syn)), real.shape[-2:], self.aug_gen, shared=True
            )
            yield (
                c,
                self.augment.apply(real, draw),
                self.augment.apply(syn, draw),
                labels[labels == c][: len(syn)],
            )
