"""Distillation over several processes: a run in shards, merged into one set.

By class (``Method.splits_by = "class"``, DM): DM's loss is a sum over classes, and so is the CMI
term (Eq. 10: Q_y and its KL terms are per class; only the 1/|S| in front spans classes). What
the classes share within an iteration is drawn from (seed, iteration) alone: DM's random network
and the CMI term's proxy. Each class draws its start, its real batches and its augmentation from
its own streams (cmidd/synthetic.py, ``ClassMatching``), and the optimizer acts on each image
alone. So shard k of K (``shard.index``, ``shard.count``) distils the classes of its part
(contiguous ranges of the classes) exactly as the whole run would, the CMI term divided by the
whole set's size.

By IPC index (``"ipc"``, SRe2L, as its reference launches one job per range of ``ipc_id``): a
recovery batch holds the images at one index within the classes, and batches meet only in the
sum of their losses, each with its own jitter stream. Shard k recovers the indices of its range
for every class. Without CMI that is the whole run's recovery exactly. The CMI term, though,
sees only the shard's images: each class's Q_y is the mean over the shard's indices, not over
all IPC of the class (its KL terms are divided by the whole set's size, so an image's gradient
keeps the whole run's scale); with ``cmi.weight`` > 0 the merged set is a different run's.

A shard's set is ``shard.pt`` and its results.json has no accuracy; a method's last stage
(SRe2L's relabel) waits for the whole set. ``task=merge`` (cmidd/merge.py) joins the K parts
into ``synthetic.pt``, runs that last stage, and evaluates it with the run's protocol and
streams.

Not split: methods whose classes meet in a trained network (DC, DSA, IDC, IDM, MTT),
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
    indices: tuple  # the images within each class it distils (their indices, 0 to ipc - 1)
    total: int  # the whole set's (decoded) images: the |S| of the CMI term

    def describe(self) -> dict:
        return {
            "index": self.index,
            "count": self.count,
            "classes": list(self.classes),
            "indices": list(self.indices),
        }


def shard_of(cfg: DictConfig, method, term, real) -> Shard:
    """The run's shard (``shard.index`` of ``shard.count``), or None for a whole run."""
    count = check_number("shard.count", cfg.shard.count, 1, integer=True)
    index = check_number("shard.index", cfg.shard.index, 0, integer=True)
    if count == 1 and index == 0:
        return None
    if index >= count:
        raise UserError(f"shard.index={index} is invalid: shards are 0 to {count - 1}")
    if method.splits_by is None:
        raise UserError(
            f"shard.count={count} is invalid with method={cfg.method.name}: its classes meet in a "
            "trained network, so a shard would not distil what the whole run does (dm and sre2l "
            "split)"
        )
    parts = {
        "class": (real.num_classes, f"dataset={real.name} has {real.num_classes} classes"),
        "ipc": (cfg.ipc, f"the run has ipc={cfg.ipc}"),
    }[method.splits_by]
    if count > parts[0]:
        raise UserError(
            f"shard.count={count} is invalid: method={cfg.method.name} splits by "
            f"{method.splits_by} and {parts[1]}"
        )
    if cfg.plugin.name != "none":
        raise UserError(f"shard.count={count} is invalid with plugin={cfg.plugin.name}: use none")
    if term.auto is not None:
        raise UserError(
            f"shard.count={count} is invalid with cmi.weight=auto: its weight comes from the "
            "gradient over the whole set; give a number"
        )
    classes, indices = range(real.num_classes), range(cfg.ipc)
    if method.splits_by == "class":
        classes = torch.arange(real.num_classes).tensor_split(count)[index].tolist()
    else:
        indices = torch.arange(cfg.ipc).tensor_split(count)[index].tolist()
    total = real.num_classes * cfg.ipc * method.factor**2
    return Shard(index, count, tuple(classes), tuple(indices), total)
