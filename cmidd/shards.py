"""Distillation over several processes: a run's classes in shards, merged into one set.

DM's loss is a sum over classes, and so is the CMI term (Eq. 10: Q_y and its KL terms are per
class; only the 1/|S| in front spans classes). What the classes share within an iteration is
drawn from (seed, iteration) alone: DM's random network and the CMI term's proxy. Each class
draws its start, its real batches and its augmentation from its own streams (cmidd/synthetic.py,
``ClassMatching``), and the optimizer acts on each image alone. So shard k of K (``shard.index``,
``shard.count``) distils the classes of its part (contiguous ranges of the classes) exactly as the
whole run would, the CMI term divided by the whole set's size; its set is ``shard.pt`` and its
results.json has no accuracy. ``task=merge`` (cmidd/merge.py) joins the K parts into
``synthetic.pt``: the unsplit run's set up to the order of floating-point sums, evaluated with
the run's protocol and streams.

Not split: methods whose classes meet in a trained network (DC, DSA, IDC, IDM, MTT, SRe2L),
``cmi.weight=auto`` (its weight comes from the gradient over the whole set) and plug-ins.
"""

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from .errors import UserError, check_number

SET = "shard.pt"  # a shard's part of the set; cmidd/merge.py joins them


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    classes: tuple  # the classes this shard distils
    total: int  # the whole set's (decoded) images: the |S| of the CMI term

    def describe(self) -> dict:
        return {"index": self.index, "count": self.count, "classes": list(self.classes)}


def shard_of(cfg: DictConfig, method, term, real) -> Shard:
    """The run's shard (``shard.index`` of ``shard.count``), or None for a whole run."""
    count = check_number("shard.count", cfg.shard.count, 1, integer=True)
    index = check_number("shard.index", cfg.shard.index, 0, integer=True)
    if count == 1 and index == 0:
        return None
    if index >= count:
        raise UserError(f"shard.index={index} is invalid: shards are 0 to {count - 1}")
    if count > real.num_classes:
        raise UserError(
            f"shard.count={count} is invalid: dataset={real.name} has {real.num_classes} classes"
        )
    if not method.splits_by_class:
        raise UserError(
            f"shard.count={count} is invalid with method={cfg.method.name}: its classes meet in a "
            "trained network, so a shard would not distil what the whole run does (dm splits)"
        )
    if cfg.plugin.name != "none":
        raise UserError(f"shard.count={count} is invalid with plugin={cfg.plugin.name}: use none")
    if term.auto is not None:
        raise UserError(
            f"shard.count={count} is invalid with cmi.weight=auto: its weight comes from the "
            "gradient over the whole set; give a number"
        )
    classes = torch.arange(real.num_classes).tensor_split(count)[index].tolist()
    return Shard(index, count, tuple(classes), real.num_classes * cfg.ipc * method.factor**2)
