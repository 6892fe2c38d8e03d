"""SeqMatch's stage experts (shqii1j/seqmatch, ``seqmatch-mtt/buffer.py`` with ``--reparam_syn
--pre_names``, L65-133): the trajectories that stage k > 1 of SeqMatch matches.

Each expert starts from a fresh network trained on the earlier stages' subsets in turn, as the
reference's ``evaluate_synset`` trains it (L94-110): on S_1 at the lr learned in stage 1, then on
S_1 + S_2 at stage 2's, ..., up to S_1 + ... + S_{k-1}, each time with SGD (momentum 0.9, weight
decay 5e-4, batches of 256, DSA, the lr x 0.1 at half the epochs). From there it trains on the
real data as an MTT expert does (the expert recipe, for ``epochs`` epochs: the reference's 20,
against 50 for the first buffer), its parameters recorded at the start and after every epoch: so
each trajectory's first snapshot is the network trained on the earlier subsets.

A stage's buffer is a ``Store`` under the cache, named by a checksum of the earlier subsets, their
lrs and the recipes, so a resumed run, or a job that reaches the same subsets, finds it built.
"""

import hashlib
import json
import logging
from pathlib import Path

import torch

from ..pretrained.experts import Trajectories, trajectory
from ..pretrained.store import Store
from ..runtime import build_seeded, generator
from ..train import StepSchedule, train_classifier

log = logging.getLogger(__name__)


def _digest(subsets: list, lrs: list, spec: dict) -> str:
    digest = hashlib.sha256(json.dumps({"lrs": lrs, **spec}, sort_keys=True).encode())
    for images, labels in subsets:
        digest.update(images.detach().float().cpu().contiguous().numpy().tobytes())
        digest.update(labels.cpu().numpy().tobytes())
    return digest.hexdigest()[:10]


def warm_start(net, subsets: list, lrs: list, init: dict, gen: torch.Generator, augment) -> None:
    """Train ``net`` on S_1, then S_1 + S_2, ... (``subsets``' cumulative unions), the j-th at
    ``lrs[j]``: the reference's ``evaluate_synset`` in sequence."""
    half = init["epochs"] // 2 + 1  # evaluate_synset's lr decay epoch
    for j, lr in enumerate(lrs):
        images = torch.cat([s[0] for s in subsets[: j + 1]]).detach()
        labels = torch.cat([s[1] for s in subsets[: j + 1]])
        train_classifier(
            net,
            images,
            labels,
            init["epochs"],
            lr=float(lr),
            momentum=0.9,
            weight_decay=5e-4,
            batch_size=256,
            generator=gen,
            augment=augment,
            schedule=StepSchedule([half], 0.1, restart=True),  # a fresh SGD, as the reference
        )


def stage_trajectories(stage: int, subsets: list, lrs: list, real, make_net, setup: dict, device):
    """The buffer of ``stage`` (1-based, > 1): ``subsets`` [(images, labels)] and ``lrs`` of the
    stages before it. ``setup``: ``count`` experts, ``seed``, ``root`` (the cache folder),
    ``init`` ({epochs}), ``recipe`` (the expert recipe: lr, momentum, weight_decay,
    batch_size), ``epochs`` on the real data, ``augment`` (a DSA) and ``net`` (its config,
    for the store's name)."""
    recipe, init = setup["recipe"], setup["init"]
    spec = {
        "stage": stage,
        "seed": setup["seed"],
        "net": setup["net"],
        "recipe": recipe,
        "init": init,
        "epochs": setup["epochs"],
    }
    folder = Path(setup["root"]).expanduser() / real.meta["dataset"]
    store = Store(
        folder / f"stage{stage}-{_digest(subsets, lrs, spec)}",
        "expert",
        f"SeqMatch stage {stage} buffer",
        "plugin.technique.experts",
    )
    train_set = None

    def make(i: int) -> tuple:
        nonlocal train_set
        train_set = train_set or real.train_tensors()
        name = f"seqmatch/stage{stage}/expert/{i}"
        net = build_seeded(make_net, setup["seed"], name, **real.net_args).to(device)
        gen = generator(setup["seed"], name)
        warm_start(net, subsets, lrs, init, gen, setup["augment"])
        recipe = {**setup["recipe"], "epochs": setup["epochs"]}
        label = f"stage {stage} expert {i}"
        snapshots = trajectory(net, *train_set, recipe, gen, setup["augment"], label)
        return snapshots, {"stage": stage, "lrs": [float(lr) for lr in lrs]}

    log.info("SeqMatch stage %d: %d experts in %s", stage, setup["count"], store.directory)
    store.build(setup["count"], real.meta, make)
    items = store.load(setup["count"], real.meta, mmap=True)
    return Trajectories([payload for payload, _ in items])
