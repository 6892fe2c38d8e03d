"""SeqMatch (Du et al., "Sequential Subset Matching for Dataset Distillation", NeurIPS 2023) on
MTT, after its reference code (shqii1j/seqmatch, ``seqmatch-mtt/distill_eval_new.py`` and
``buffer.py``).

The stored images of every class are split into ``subsets`` consecutive subsets (17/17/16 of
50), distilled one after another: the run's iterations are shared out evenly, and in stage k

- only subset k is updated; the subsets before it are frozen (the loop keeps them fixed, so
  neither the trajectory loss nor CMI moves them) and the later ones are not used yet;
- the student's unrolled steps draw their batches from subsets 1..k together (L374-393), of the
  current subset's size unless ``batch_syn`` is given (the reference's default, L166-169), or
  MTT's ``batch_syn`` where that is smaller;
- CMI, where it is added, is that of subsets 1..k;
- ``plugin=seqmatch`` (``SeqMatch``, the reference's build): stage k > 1 matches a buffer of its
  own, experts that start from a network trained on subsets 1..k-1 and then train on the real
  data (``cmidd.plugins.stage_experts``), built when the stage begins; the student starts at an
  epoch of ``starts[k]`` on that buffer (default: MTT's [0, max_start_epoch), cut to fit it);
- ``plugin=seqmatch_shared`` (``SeqMatchShared``, a variant after the paper's description, not
  the reference's code): every stage matches the same real-data experts, stage k from a later
  range of start epochs, ``starts[k]``, by default the k-th of ``subsets`` equal parts of MTT's
  [0, max_start_epoch); no buffer is built.
"""

import torch

from ..errors import UserError
from ..synthetic import decode
from .base import Plugin, Stage, class_rows
from .stage_experts import stage_trajectories


class SeqMatchShared(Plugin):
    """``max_start_epoch`` and ``expert_epochs`` are MTT's, ``trained_epochs`` the experts'
    (``expert.recipe.epochs``): the stages' start epochs must lie on the trajectories."""

    name = "seqmatch_shared"

    def __init__(
        self,
        subsets: int,
        iterations: int,
        ipc: int,
        seed: int,
        max_start_epoch: int,
        expert_epochs: int,
        trained_epochs: int,
        starts=None,
        batch_syn=None,
    ):
        if not 1 <= subsets <= ipc:
            raise UserError(
                f"plugin.technique.subsets={subsets} is invalid: it must be in [1, ipc={ipc}]"
            )
        self.subsets, self.iterations = int(subsets), max(int(iterations), 1)
        self.batch_syn, self.expert_epochs = batch_syn, int(expert_epochs)
        starts = starts or self.default_starts(max_start_epoch)
        self.starts = [[int(lo), int(hi)] for lo, hi in starts]
        if len(self.starts) != self.subsets:
            raise UserError(
                f"plugin.technique.starts has {len(self.starts)} ranges for "
                f"plugin.technique.subsets={self.subsets}"
            )
        for k, (lo, hi) in enumerate(self.starts):
            trained = self.buffer_epochs(k, trained_epochs)
            if not 0 <= lo < hi or hi - 1 + expert_epochs > trained:
                raise UserError(
                    f"plugin.technique.starts[{k}]=[{lo}, {hi}) is invalid: start epochs must be "
                    f"a non-empty range in [0, {trained - expert_epochs + 1}) for experts "
                    f"of {trained} epochs and expert_epochs={expert_epochs}"
                )

    def default_starts(self, max_start_epoch: int) -> list:
        """Equal parts of MTT's [0, max_start_epoch), the k-th for stage k."""
        cuts = [k * max_start_epoch // self.subsets for k in range(self.subsets + 1)]
        return [[cuts[k], max(cuts[k + 1], cuts[k] + 1)] for k in range(self.subsets)]

    def buffer_epochs(self, k: int, trained_epochs: int) -> int:
        """The epochs of the trajectories stage ``k`` (0-based) matches."""
        return trained_epochs

    def index(self, iteration: int) -> int:
        return min(iteration * self.subsets // self.iterations, self.subsets - 1)

    def stage(self, synthetic, iteration: int) -> Stage:
        k = self.index(iteration)
        masks = class_rows(synthetic.labels, self.subsets)
        batch = self.batch_syn or int(masks[k].sum())
        return Stage(torch.stack(masks[: k + 1]).any(0), masks[k], batch)

    def start_epochs(self, iteration: int) -> tuple:
        return tuple(self.starts[self.index(iteration)])


class SeqMatch(SeqMatchShared):
    """The reference's build: ``experts`` experts per later stage, warm-started by ``init_epochs``
    epochs on each union of the earlier subsets, then ``stage_epochs`` on the real data with the
    expert ``recipe`` and ``augment``, cached under ``cache``; ``net`` is MTT's network."""

    name = "seqmatch"

    def __init__(
        self,
        *args,
        experts: int,
        stage_epochs: int,
        init_epochs: int,
        recipe: dict,
        augment,
        net,
        cache: str,
        seed: int,
        max_start_epoch: int,
        **kwargs,
    ):
        self.stage_epochs, self.max_start_epoch = int(stage_epochs), int(max_start_epoch)
        super().__init__(*args, seed=seed, max_start_epoch=max_start_epoch, **kwargs)
        self.make_net, self.lrs, self.buffers = net, [], {}
        self.setup = {
            "count": int(experts),
            "seed": seed,
            "root": cache,
            "init": {"epochs": int(init_epochs)},
            "recipe": dict(recipe),
            "epochs": self.stage_epochs,
            "augment": augment,
            "net": repr(net),
        }

    def default_starts(self, max_start_epoch: int) -> list:
        """MTT's [0, max_start_epoch) for stage 1; later stages the same range on their own
        buffer, cut to fit its ``stage_epochs``."""
        later = min(max_start_epoch, self.stage_epochs - self.expert_epochs + 1)
        return [[0, max_start_epoch]] + [[0, max(later, 1)]] * (self.subsets - 1)

    def buffer_epochs(self, k: int, trained_epochs: int) -> int:
        return trained_epochs if k == 0 else self.stage_epochs

    def trajectories(self, synthetic, iteration: int, real):
        """Stage k > 1's buffer, built (or found in the cache) when the stage begins; the lr of
        each finished stage is the one learned when the next began."""
        k = self.index(iteration)
        if k == 0:
            return None
        if k not in self.buffers:
            self.lrs += [float(synthetic.lr.detach())] * (k - len(self.lrs))
            masks = class_rows(synthetic.labels, self.subsets)
            subsets = [
                decode(synthetic.images[m].detach(), synthetic.labels[m], synthetic.factor)
                for m in masks[:k]
            ]
            device = synthetic.images.device
            self.buffers = {
                k: stage_trajectories(
                    k + 1, subsets, self.lrs[:k], real, self.make_net, self.setup, device
                )
            }
        return self.buffers[k]

    def state_dict(self) -> dict:
        return {"lrs": torch.tensor(self.lrs, dtype=torch.float64)}

    def load_state_dict(self, state: dict) -> None:
        self.lrs = state["lrs"].tolist() if "lrs" in state else []
