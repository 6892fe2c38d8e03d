"""SeqMatch (Du et al., "Sequential Subset Matching for Dataset Distillation", NeurIPS 2023) on
MTT, after its reference code (shqii1j/seqmatch, ``seqmatch-mtt/distill_eval_new.py``).

The stored images of every class are split into ``subsets`` consecutive subsets (17/17/16 of
50), distilled one after another: the run's iterations are shared out evenly, and in stage k

- only subset k is updated; the subsets before it are frozen (the loop keeps them fixed, so
  neither the trajectory loss nor CMI moves them) and the later ones are not used yet;
- the student's unrolled steps draw their batches from subsets 1..k together (L374-393), of the
  current subset's size unless ``batch_syn`` is given (the reference's default, L166-169), or
  MTT's ``batch_syn`` where that is smaller;
- the student starts from a later stage of the expert trajectories: start epochs in
  ``starts[k]`` = [lo, hi), by default the k-th of ``subsets`` equal parts of MTT's
  [0, max_start_epoch);
- CMI, where it is added, is that of subsets 1..k.

Where cmidd departs from the reference (docs/plugins.md lists every difference): the reference
reaches later stages by training *new* experts warm-started on the earlier subsets
(buffer.py --pre_names, L65-133), one buffer per stage; cmidd matches later epochs of the same
experts (the paper's description), so no new buffers are built.
"""

import torch

from ..errors import UserError
from .base import Plugin, Stage, class_rows


class SeqMatch(Plugin):
    """``max_start_epoch`` and ``expert_epochs`` are MTT's, ``trained_epochs`` the experts'
    (``expert.recipe.epochs``): the stages' start epochs must lie on the trajectories."""

    name = "seqmatch"

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
        self.batch_syn = batch_syn
        if starts is None:  # equal parts of MTT's [0, max_start_epoch)
            cuts = [k * max_start_epoch // self.subsets for k in range(self.subsets + 1)]
            starts = [[cuts[k], max(cuts[k + 1], cuts[k] + 1)] for k in range(self.subsets)]
        self.starts = [[int(lo), int(hi)] for lo, hi in starts]
        for k, (lo, hi) in enumerate(self.starts):
            if not 0 <= lo < hi or hi - 1 + expert_epochs > trained_epochs:
                raise UserError(
                    f"plugin.technique.starts[{k}]=[{lo}, {hi}) is invalid: start epochs must be "
                    f"a non-empty range in [0, {trained_epochs - expert_epochs + 1}) for experts "
                    f"of {trained_epochs} epochs and expert_epochs={expert_epochs}"
                )
        if len(self.starts) != self.subsets:
            raise UserError(
                f"plugin.technique.starts has {len(self.starts)} ranges for "
                f"plugin.technique.subsets={self.subsets}"
            )

    def index(self, iteration: int) -> int:
        return min(iteration * self.subsets // self.iterations, self.subsets - 1)

    def stage(self, synthetic, iteration: int) -> Stage:
        k = self.index(iteration)
        masks = class_rows(synthetic.labels, self.subsets)
        batch = self.batch_syn or int(masks[k].sum())
        return Stage(torch.stack(masks[: k + 1]).any(0), masks[k], batch)

    def start_epochs(self, iteration: int) -> tuple:
        return tuple(self.starts[self.index(iteration)])
