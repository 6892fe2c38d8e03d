"""SRe2L's evaluation protocol (``eval=kd``): students trained on the set's FKD soft labels
(VILA-Lab/SRe2L validate/train_FKD.py and train_FKD.sh).

Each student replays the stored views of every epoch (``cmidd.relabel``) and minimizes
KL(softmax(t / T) || softmax(s / T)) between the stored teacher logits t and its own s (batch
mean, no T^2 factor, as train_FKD.py), with AdamW (weight decay on weights of rank > 1 only,
none on BatchNorm parameters and biases) and a cosine learning rate stepped per epoch.
Under ``torchrun``, students train data-parallel with the one-process gradient
(``cmidd.distributed``).

``hard``, a hard-label protocol (``cmidd.evaluate.Evaluator``, the DM/DSA papers'), also trains
networks on the same images with their hard labels, reported beside as ``hard/<arch>``: how
much of a set's accuracy its soft labels carry (DD-Ranking's hard-label recovery needs it).
"""

import logging
import math

import torch
from torch.nn import functional as F

from . import distributed
from .errors import UserError, check_number
from .evaluate import architectures, check_schedule, check_training, summarize
from .progress import Progress
from .runtime import build_seeded
from .train import accuracy

log = logging.getLogger(__name__)


def adamw(net, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW that decays only weights of rank > 1 (SRe2L's get_parameters)."""
    decay = [p for p in net.parameters() if p.ndim > 1]
    rest = [p for p in net.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


def kd_loss(student_logits, teacher_logits, temperature: float, whole: int = None):
    """The KL divergence summed over the rows, divided by ``whole`` (the batch size; under
    torchrun the whole batch's, of which these rows are one process's share)."""
    kl = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.softmax(teacher_logits.float() / temperature, dim=1),
        reduction="sum",
    )
    return kl / (len(student_logits) if whole is None else whole)


def shared_accuracy(net, images, labels) -> float:
    """Test accuracy, each process testing its share of the test set under torchrun."""
    mine = distributed.share(labels)
    correct = accuracy(net, distributed.share(images), mine) * len(mine)
    return distributed.total(correct, mine.device) / len(labels)


class KDEvaluator:
    """``models`` students of each architecture in ``nets``, trained for ``epochs`` on the set's
    soft labels, tested on the real test set."""

    data_parallel = True  # task=evaluate under torchrun shares each batch (cmidd.distributed)
    soft_labels = True

    def __init__(
        self,
        nets: dict,
        models: int,
        epochs: int,
        lr: float,
        weight_decay: float,
        temperature: float,
        every: int = 0,
        hard=None,
    ):
        check_schedule(models, epochs, every)
        self.hard = hard
        check_training(lr, weight_decay)
        if check_number("eval.temperature", temperature, 0) == 0:
            raise UserError("eval.temperature=0 is invalid: it must be a positive number")
        self.nets, self.models, self.epochs = architectures(nets), models, epochs
        self.lr, self.weight_decay, self.temperature, self.every = (
            lr,
            weight_decay,
            temperature,
            every,
        )

    def due(self, iteration: int, last: int) -> bool:
        """Only at the end: the soft labels exist once the set is recovered."""
        return iteration == last

    def train(self, net, images, soft) -> None:
        """Under torchrun each process replays every view and trains on its share of each batch;
        the loss is scaled so that DDP's gradient average is the whole batch's gradient."""
        model = distributed.wrap(net)
        optimizer = adamw(net, self.lr, self.weight_decay)
        net.train()
        for epoch in range(self.epochs):
            for group in optimizer.param_groups:
                group["lr"] = self.lr * (1 + math.cos(math.pi * epoch / self.epochs)) / 2
            for views, targets in soft.views(images, epoch):
                mine = model(distributed.share(views))
                loss = kd_loss(mine, distributed.share(targets), self.temperature, len(views))
                loss = loss * distributed.size()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

    def __call__(self, images, labels, real, seed, stream="eval", lr=None, soft_labels=None):
        if soft_labels is None:
            raise UserError(
                "eval=kd trains on a set's FKD soft labels and this set has none "
                "(method=sre2l relabels its set; use another eval=... for other sets)"
            )
        if soft_labels.epochs < self.epochs:
            raise UserError(
                f"eval.epochs={self.epochs}: the set's soft labels cover "
                f"{soft_labels.epochs} epochs (method.relabel.epochs)"
            )
        images = images.detach()
        results = {}
        progress = Progress(len(self.nets) * self.models, unit="net", every=30.0)
        for a, (arch, make_net) in enumerate(self.nets.items()):
            runs, val_runs = [], []
            for k in range(self.models):
                name = f"{stream}/{arch}/{k}"
                net = build_seeded(make_net, seed, name, **real.net_args).to(images.device)
                self.train(net, images, soft_labels)
                runs.append(shared_accuracy(net, real.test_images, real.test_labels))
                if real.val_images is not None:
                    val_runs.append(shared_accuracy(net, real.val_images, real.val_labels))
                progress.log(log, a * self.models + k + 1, "evaluated %s %d", arch, k)
            results[arch] = summarize(runs, val_runs)
        if self.hard is not None and distributed.launched():
            log.warning("eval.hard is skipped under torchrun: run task=evaluate without it")
        elif self.hard is not None:
            hard = self.hard(images, labels, real, seed, stream=f"{stream}/hard")
            results |= {f"hard/{arch}": summary for arch, summary in hard.items()}
        return results
