"""The interface every base distillation method implements, and how a method option is built.

A method option (``conf/method/<name>.yaml``) names its class in ``algorithm`` (a partial, built
with the runtime values ``real``, ``seed`` and ``device``) and states how its synthetic set
starts and is optimized: ``init``, ``factor``, ``optimizer``, ``synthetic_lr`` and ``schedule``
(``conf/base/method.yaml`` gives the defaults). ``build_method`` reads that node; outside
``cmidd/methods/`` only the checks that span groups do (``cmidd/validate.py``: the option's
name, MTT's student net). What a method *is* is declared once, on its class:

- ``iterates``: False for a selection of real images (the coreset baselines), which is made by
  ``initial_set`` alone;
- ``takes_cmi``: False where the CMI term has nothing to act on (a selection);
- ``needs``: the pre-trained kinds it uses (``cmidd.pretrained``: ``proxy``, ``expert``,
  ``teacher``), handed to ``provide`` once every component's settings are checked;
- ``learns_lr``: it distills a training learning rate with the images (MTT), which needs
  ``method.synthetic_lr``;
- ``soft_labels``: it stores soft labels with its set (SRe2L), which only ``eval=kd`` uses;
- ``stores_set``: False when its set is not worth a file (the whole training split), whose
  accuracy ``evaluated`` may also take from a cache;
- ``splits_by``: how a run may be split over processes (cmidd/shards.py): ``"class"`` where its
  loss is a sum over classes that share only draws of (seed, iteration) (DM), ``"ipc"`` where
  the images at different indices within the classes never meet (SRe2L's recovery batches);
  None: not split;
- where the CMI term enters, as each method's reference code has it: ``cmi_every_step`` (added
  to every yielded loss: DC/DSA before each of the ``outer_loop`` image updates, IDC at each
  matching step; else only to the first loss of an iteration) and ``new_proxy_every_step`` (a
  proxy drawn for every step that adds CMI, IDC; else one per iteration).

The distillation loop owns the synthetic set, its optimizer and the CMI term; a method only says
what its distillation loss is:

    for loss in method.losses(synthetic, iteration):
        # the loop adds weight * CMI where the method's CMI schedule says, then
        # zero_grad(); backward(); optimizer.step()  -- before the generator resumes
        ...

``losses`` yields one loss per synthetic-set update of the iteration: DM, IDM and MTT yield one;
DC/DSA yield one per outer step and IDC one per matching step, training their network between
yields, after the loop has applied the update (so the code after a ``yield`` sees the updated
images). ``state_dict``/``load_state_dict`` hold whatever the method needs to continue
bit-identically after a checkpoint (its random generators, networks it keeps across iterations).
"""

from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from ..config import check_entries
from ..errors import UserError, check_choice, check_number
from ..plugins.base import Plugin
from ..runtime import build_seeded, generator
from ..synthetic import SyntheticSet


def method_class(node: DictConfig) -> type:
    """The class of a method option (``method``), to read its declarations before building it."""
    target = node.algorithm.get("_target_")
    try:
        return get_class(target)
    except (ImportError, ValueError) as error:
        reason = " ".join(str(error).split())  # Hydra's message spans lines
        raise UserError(
            f"method.algorithm._target_={target} cannot be imported: {reason}"
        ) from None


def build_method(node: DictConfig, real, ipc: int, seed: int, device):
    """The method of option ``node`` for a set of ``ipc`` images per class of ``real``."""
    init = check_choice("method.init", node.init, ("real", "noise"))
    factor = check_number("method.factor", node.factor, 1, integer=True)
    _check_ipc(real, ipc, factor**2 if init == "real" else 1)  # before any table lookup by IPC
    check_entries(node, "method")
    method = instantiate(node.algorithm)(real=real, seed=seed, device=device)
    learned = node.synthetic_lr
    method.set_recipe(
        init,
        factor,
        optimizer=instantiate(node.optimizer),
        synthetic_lr=None if learned is None else OmegaConf.to_container(learned, resolve=True),
        schedule=instantiate(node.schedule),
    )
    return method


def _check_ipc(real, ipc: int, per_image: int) -> None:
    """A set started from real images needs ``ipc`` distinct ones per class (``per_image``
    each: factor^2 for a multi-formulation set)."""
    smallest = min(len(images) for images in real.train)
    if ipc * per_image > smallest:
        needs = f" ({per_image} real images per stored image)" if per_image > 1 else ""
        raise UserError(
            f"ipc={ipc} is invalid: the smallest class of dataset={real.name} has "
            f"{smallest} training images{needs}"
        )


def _check_optimizer(key: str, make) -> None:
    """An optimizer's settings, by building it on a probe parameter (torch checks them)."""
    lr = getattr(make, "keywords", {}).get("lr")
    if lr is not None:
        check_number(f"{key}.lr", lr, 0)
    _check_built(key, lambda: make([torch.zeros(1, requires_grad=True)]))


def _check_built(key: str, build) -> None:
    try:
        build()
    except (ValueError, TypeError) as error:
        raise UserError(f"{key} is invalid: {error}") from None


class Method(ABC):
    """Base of every method; the class attributes are the declarations (module docstring)."""

    iterates = True
    takes_cmi = True
    needs = ()
    learns_lr = False
    soft_labels = False
    stores_set = True
    splits_by = None  # "class" | "ipc" | None
    cmi_every_step = False
    new_proxy_every_step = False
    plugin = Plugin()  # plugin=none; ``use`` installs a technique (cmidd.plugins)
    init, factor, synthetic_lr = "real", 1, None

    def set_recipe(self, init: str, factor: int, optimizer, synthetic_lr, schedule) -> None:
        """How the synthetic set starts (``init``: real images or noise; ``factor``^2 images
        per stored one) and is optimized (``optimizer`` and ``schedule``: partials of
        torch.optim; ``synthetic_lr``: {init, lr} of a learnable training lr)."""
        if self.learns_lr and synthetic_lr is None:
            raise UserError(
                f"method.synthetic_lr=null is invalid: {type(self).__name__} learns the "
                "training lr, which needs method.synthetic_lr.init and method.synthetic_lr.lr"
            )
        if self.learns_lr:
            check_number("method.synthetic_lr.lr", synthetic_lr["lr"], 0)
        if self.iterates and optimizer is None:
            raise UserError("method.optimizer=null is invalid: the method optimizes its set")
        if optimizer is not None:
            _check_optimizer("method.optimizer", optimizer)
        if schedule is not None and optimizer is not None:
            probe = optimizer([torch.zeros(1, requires_grad=True)])
            _check_built("method.schedule", lambda: schedule(probe))
        self.init, self.factor = init, factor
        self.synthetic_lr = synthetic_lr if self.learns_lr else None
        self._optimizer, self._schedule = optimizer, schedule

    def use(self, plugin: Plugin) -> None:
        """Run with a plug-in technique; it reaches the method only through its hooks."""
        self.plugin = plugin

    def provide(self, **pretrained) -> None:  # noqa: B027 -- most methods need nothing
        """The pre-trained objects of ``needs``, by kind, before the set is made."""

    def initial_set(self, real, ipc: int, generator, classes=None, indices=None) -> SyntheticSet:
        """The synthetic set the iterations start from: ``ipc`` images per class (of
        ``classes``, all by default; only those at ``indices`` within each class, if given) from
        distinct random real images (``factor``^2 of them tiled per stored image) or noise; a
        plug-in technique may choose the real images."""

        def pick(c: int, n: int, stream) -> torch.Tensor:
            chosen = self.plugin.initial_images(c, real, n)
            return real.sample(c, n, stream) if chosen is None else chosen

        lr = None if self.synthetic_lr is None else self.synthetic_lr["init"]
        return SyntheticSet.from_real(
            real, ipc, generator, self.init, self.factor, lr, pick, classes, indices
        )

    def optimizer(self, synthetic: SyntheticSet):
        """The optimizer of the set's images (and of its learnable lr, at its own step)."""
        groups = [{"params": [synthetic.images]}]
        if synthetic.lr is not None:
            groups.append({"params": [synthetic.lr], "lr": self.synthetic_lr["lr"]})
        return self._optimizer(groups)

    def scheduler(self, optimizer):
        """The optimizer's lr schedule, stepped every iteration (SRe2L), or None."""
        return None if self._schedule is None else self._schedule(optimizer)

    @abstractmethod
    def losses(self, synthetic, iteration: int) -> Iterator[torch.Tensor]:
        """One loss per synthetic-set update of ``iteration``."""

    def evaluated(self, evaluate) -> dict:
        """The set's accuracies: ``evaluate()``, the run's protocol on the set."""
        return evaluate()

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
        # class_pairs draws each class from its own streams, so that a class's draws do not
        # depend on which other classes a run holds (a shard of the classes, cmidd/shards.py)
        classes = range(real.num_classes)
        self.class_samplers = [generator(seed, f"{prefix}/real/{c}") for c in classes]
        self.class_augs = [generator(seed, f"{prefix}/augment/{c}") for c in classes]

    def use(self, plugin: Plugin) -> None:
        super().use(plugin)
        self.batch_real = plugin.batch_real or self.batch_real  # the technique's own, if any

    def state_dict(self) -> dict:
        return {
            "sampler": self.sampler.get_state(),
            "augment": self.aug_gen.get_state(),
            "class_samplers": [g.get_state() for g in self.class_samplers],
            "class_augs": [g.get_state() for g in self.class_augs],
        }

    def load_state_dict(self, state: dict) -> None:
        if "class_samplers" not in state:
            raise UserError(
                "resume=... is invalid: the checkpoint comes from a cmidd that drew every "
                "class from one random stream; start the run again"
            )
        self.sampler.set_state(state["sampler"])
        self.aug_gen.set_state(state["augment"])
        for g, s in zip(self.class_samplers, state["class_samplers"], strict=True):
            g.set_state(s)
        for g, s in zip(self.class_augs, state["class_augs"], strict=True):
            g.set_state(s)

    def fresh_network(self, name: str):
        """A network of ``make_net`` initialized from (seed, name), on the device."""
        return build_seeded(self.make_net, self.seed, name, **self.real.net_args).to(self.device)

    def class_pairs(self, synthetic, net, syn_max: int = None):
        """(class, augmented real batch, augmented synthetic batch, synthetic labels) per class of
        the set; with ``syn_max``, at most that many random (decoded) synthetic images per class.
        The real images are random unless the plug-in chooses them (by the matching ``net``)."""
        images, labels = synthetic.decoded()
        for c in synthetic.classes:
            sampler, aug_gen = self.class_samplers[c], self.class_augs[c]
            real = self.plugin.real_batch(c, self.real, net, self.batch_real)
            if real is None:
                real = self.real.sample(c, self.batch_real, sampler)
            syn = images[labels == c]
            if syn_max is not None and len(syn) > syn_max:
                syn = syn[torch.randperm(len(syn), generator=sampler)[:syn_max].to(syn.device)]
            n = max(len(real), len(syn))
            draw = self.augment.draw(n, real.shape[-2:], aug_gen, shared=True)
            yield (
                c,
                self.augment.apply(real, draw),
                self.augment.apply(syn, draw),
                labels[labels == c][: len(syn)],
            )
