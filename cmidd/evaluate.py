"""Evaluation protocols: train fresh networks on the synthetic set, test on the real test set.

One class serves the protocols of the references, chosen by ``eval=...`` (conf/eval/): the
DM/DSA papers' (``default``), DC's (``dc``) and IDC's (``idc``) differ only in settings.
"""

import logging
import statistics

import torch
from omegaconf import OmegaConf

from . import batching
from .ensemble import ensemble_accuracy, train_ensemble
from .errors import UserError, check_choice, check_number
from .progress import Progress, epoch_logger
from .runtime import build_seeded, generator
from .train import StepSchedule, accuracy, train_classifier

log = logging.getLogger(__name__)

VECTORIZE = ("auto", True, False)


def architectures(nets: dict) -> dict:
    """The nets to evaluate: ``eval.nets.<arch>=null`` leaves an architecture out (a preset
    replacing a protocol's default net, e.g. experiment=cpu_cifar10's smaller students); one must
    remain, and each must be a whole net config (a preset's partial key for another protocol's
    net is not one)."""
    kept = {arch: make for arch, make in nets.items() if make is not None}
    if not kept:
        raise UserError("eval.nets is empty: at least one architecture must be evaluated")
    for arch, make in kept.items():
        if not callable(make):
            shown = OmegaConf.to_container(make) if OmegaConf.is_config(make) else make
            raise UserError(f"eval.nets.{arch}={shown} is not a net config")
    return kept


def check_schedule(models: int, epochs: int, every: int) -> None:
    """The keys every protocol has: networks per architecture, their epochs, the curve's stride."""
    check_number("eval.models", models, 1, integer=True)
    check_number("eval.epochs", epochs, 1, integer=True)
    check_number("eval.every", every, 0, integer=True)


def check_training(lr: float, weight_decay: float, batch_size: int = 1) -> None:
    """The networks' optimizer settings (checked before the distillation, not at its end)."""
    if check_number("eval.lr", lr, 0) == 0:
        raise UserError("eval.lr=0 is invalid: it must be a positive number")
    check_number("eval.weight_decay", weight_decay, 0)
    check_number("eval.batch_size", batch_size, 1, integer=True)


def summarize(runs: list, val_runs: list = None) -> dict:
    """The mean and (population) std of the test accuracies of one architecture's networks, and
    under ``val`` those of their validation accuracies (with a validation split)."""
    std = statistics.pstdev(runs) if len(runs) > 1 else 0.0
    summary = {"mean": statistics.fmean(runs), "std": std, "runs": runs}
    return summary if not val_runs else summary | {"val": summarize(val_runs)}


def scored(net, real) -> tuple:
    """(test accuracy, validation accuracy or None) of a trained network."""
    val = None if real.val_images is None else accuracy(net, real.val_images, real.val_labels)
    return accuracy(net, real.test_images, real.test_labels), val


class Evaluator:
    """Trains ``models`` freshly initialized networks of each architecture in ``nets`` on a
    synthetic set and reports their test accuracies: SGD for ``epochs``, the learning rate
    multiplied by ``lr_gamma`` at the start of each epoch in ``lr_milestones`` (with a fresh
    optimizer if ``restart_momentum``), ``augment`` on every training batch, CutMix with
    probability ``cutmix``.

    ``vectorize`` trains the ``models`` networks of an architecture at once as one vectorized
    model (``cmidd.ensemble``) instead of one after another; the results are the same up to
    floating-point order. ``auto`` vectorizes on CUDA only, where it measured faster (README),
    unless ``compute.compile``, ``compute.channels_last`` or ``precision=bf16`` asks for
    networks of their own.
    """

    soft_labels = False  # it trains on hard labels (the protocols of eval=kd train on soft ones)

    def __init__(
        self,
        nets: dict,
        models: int,
        epochs: int,
        lr: float,
        momentum: float,
        weight_decay: float,
        batch_size: int,
        lr_milestones=(),
        lr_gamma: float = 0.1,
        restart_momentum: bool = True,
        augment=None,
        cutmix: float = 0.0,
        every: int = 0,
        vectorize="auto",
    ):
        check_schedule(models, epochs, every)
        check_training(lr, weight_decay, batch_size)
        check_number("eval.momentum", momentum, 0)
        check_number("eval.lr_gamma", lr_gamma, 0)
        check_number("eval.cutmix", cutmix, 0)
        check_choice("eval.vectorize", vectorize, VECTORIZE)
        self.nets, self.models, self.epochs = architectures(nets), models, epochs
        self.hyper = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, batch_size=batch_size
        )
        self.schedule = StepSchedule(lr_milestones, lr_gamma, restart_momentum)
        self.augment, self.cutmix, self.every, self.vectorize = augment, cutmix, every, vectorize

    def due(self, iteration: int, last: int) -> bool:
        """Whether the accuracy curve has a point at ``iteration`` (the last one always does)."""
        return iteration == last or (self.every > 0 and iteration % self.every == 0)

    def vectorized(self, device: torch.device) -> bool:
        if self.cutmix > 0:  # CutMix is drawn per batch; the vectorized trainer has no per-net draw
            return False
        if self.vectorize == "auto":
            return device.type == "cuda" and self.models > 1 and not self.options()
        if self.vectorize and self.options():
            log.warning("eval.vectorize=true: %s do not apply to it", ", ".join(self.options()))
        return self.vectorize

    @staticmethod
    def options() -> list:
        """The settings that apply to networks trained one at a time only: torch.compile,
        channels-last memory, and bf16 (autocast does not reach into torch.vmap)."""
        return [
            name
            for name, used in (
                ("compute.compile", batching.setting("compile") != "none"),
                ("compute.channels_last", batching.setting("channels_last")),
                ("precision=bf16", batching.setting("precision") == "bf16"),
            )
            if used
        ]

    def __call__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        real,
        seed: int,
        stream: str = "eval",
        lr: float = None,
        soft_labels=None,
    ) -> dict:
        """Each network's initialization, batch order and augmentation come from its own stream
        (``stream``/arch/k of ``seed``), so results do not depend on what ran before, nor on
        whether the networks are trained together. ``lr`` replaces ``eval.lr`` for a set that
        carries its own learned learning rate (MTT). A set's FKD soft labels (SRe2L) are for
        ``eval=kd``; this protocol trains on the hard labels."""
        if soft_labels is not None:
            log.info("this protocol trains on hard labels: the set's soft labels are eval=kd's")
        images, labels = images.detach(), labels.detach()
        results = {}
        progress = Progress(len(self.nets) * self.models, unit="net", every=30.0)
        for a, (arch, make_net) in enumerate(self.nets.items()):
            names = [f"{stream}/{arch}/{k}" for k in range(self.models)]
            nets = [
                build_seeded(make_net, seed, name, **real.net_args).to(images.device)
                for name in names
            ]
            generators = [generator(seed, name) for name in names]
            hyper = self.hyper if lr is None else {**self.hyper, "lr": lr}
            train = dict(epochs=self.epochs, augment=self.augment, schedule=self.schedule, **hyper)
            if self.vectorized(images.device):
                ensemble = train_ensemble(
                    nets,
                    images,
                    labels,
                    generators=generators,
                    **train,
                    on_epoch=epoch_logger(log, f"evaluating {arch}", self.epochs, every=60.0),
                )
                runs = ensemble_accuracy(ensemble, real.test_images, real.test_labels)
                val_runs = None
                if real.val_images is not None:
                    val_runs = ensemble_accuracy(ensemble, real.val_images, real.val_labels)
                progress.log(log, (a + 1) * self.models, "evaluated %s", arch)
            else:
                runs, val_runs = [], []
                for k, (net, g) in enumerate(zip(nets, generators, strict=True)):
                    report = epoch_logger(log, f"evaluating {arch} {k}", self.epochs, every=60.0)
                    net = batching.prepared(net)
                    train_classifier(
                        net,
                        images,
                        labels,
                        generator=g,
                        on_epoch=report,
                        cutmix=self.cutmix,
                        mixed=True,
                        **train,
                    )
                    test, val = scored(net, real)
                    runs.append(test)
                    val_runs += [] if val is None else [val]
                    progress.log(log, a * self.models + k + 1, "evaluated %s %d", arch, k)
            results[arch] = summarize(runs, val_runs)
        return results


def evaluate_set(method, evaluator, synthetic, real, seed: int, iteration: int) -> dict:
    """The accuracies of ``synthetic`` under ``evaluator`` (the run's protocol) after
    ``iteration`` iterations, on the stream a run's evaluation at that iteration uses: the
    decoded images with their targets, soft labels with the set if it has them."""
    images, labels = synthetic.train_set()
    soft = {} if synthetic.relabel is None else {"soft_labels": synthetic.relabel}
    return method.evaluated(
        lambda: evaluator(
            images,
            labels,
            real,
            seed,
            stream=f"eval/{iteration}",
            lr=synthetic.learned_lr,
            **soft,
        )
    )
