"""The teacher of SRe2L (Yin et al., NeurIPS 2023): its squeeze stage, a network with BatchNorm
trained on the real data, whose running statistics the recover stage matches and whose outputs
relabel the recovered images.

Either trained here (``task=teacher``, cached in ``<cache>/teachers/<dataset>/<teacher>-<hash>/``
like proxies and experts) or read from a torchvision-format checkpoint the user provides
(``teacher.weights=<file>``: a state dict of ``teacher.net``, bare or under ``state_dict`` or
``model``, with or without DataParallel's ``module.`` prefix; loaded with ``weights_only``).
"""

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ..errors import UserError, describe
from ..progress import epoch_logger
from ..runtime import build_seeded, generator
from ..train import CosineSchedule, accuracy, train_classifier
from .kind import Kind, make_net

log = logging.getLogger(__name__)


def frozen(net):
    """Eval mode (BatchNorm keeps its running statistics) and no parameter gradients."""
    return net.eval().requires_grad_(False)


def _train(node: DictConfig, real, device, train_set, i: int) -> tuple:
    images, labels = train_set()
    recipe = OmegaConf.to_container(node.recipe, resolve=True)
    net = build_seeded(make_net(node), node.seed, f"teacher/{i}", **real.net_args).to(device)
    train_classifier(
        net,
        images,
        labels,
        recipe["epochs"],
        generator=generator(node.seed, f"teacher/{i}"),
        lr=recipe["lr"],
        momentum=recipe["momentum"],
        weight_decay=recipe["weight_decay"],
        batch_size=recipe["batch_size"],
        augment=instantiate(node.recipe.augment),
        schedule=CosineSchedule(recipe["epochs"]),
        on_epoch=epoch_logger(log, f"teacher {i}", recipe["epochs"]),
    )
    test = accuracy(net, real.test_images, real.test_labels)
    log.info("teacher %d trained: test accuracy %.4f", i, test)
    meta = {"net": OmegaConf.to_container(node.net, resolve=True), "recipe": recipe}
    return net.state_dict(), {**meta, "seed": node.seed, "test_accuracy": test}


def _load(node: DictConfig, real, device, states: list):
    net = make_net(node)(**real.net_args)
    net.load_state_dict(states[0])
    return frozen(net.to(device))


def from_file(node: DictConfig, real, device):
    """``teacher.net`` with the weights of the file ``teacher.weights``."""
    path = Path(node.weights).expanduser()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- missing, truncated or a pickle of code
        raise UserError(f"teacher.weights={path} cannot be read: {describe(error)}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise UserError(f"teacher.weights={path} holds no state dict ({type(state).__name__})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = make_net(node)(**real.net_args)
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(
            f"teacher.weights={path} does not fit teacher.net={node.name}: "
            f"{describe(error).splitlines()[0]}"
        ) from None
    log.info("teacher: %s from %s", node.name, path)
    return frozen(net.to(device))


@dataclass(frozen=True)
class TeacherKind(Kind):
    def get(self, cfg: DictConfig, real, device):
        if cfg.teacher.weights:
            return from_file(cfg.teacher, real, device)
        if cfg.teacher.from_file_only:
            raise UserError(
                f"teacher={cfg.teacher.name} is read from a file: set teacher.weights=<state dict>"
            )
        return super().get(cfg, real, device)


KIND = TeacherKind(
    group="teacher",
    subdir="teachers",
    prefix="teacher",
    what="teacher",
    size="count",
    task="teacher",
    train=_train,
    load=_load,
)
