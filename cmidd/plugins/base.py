"""Plug-in techniques: what earlier papers added on top of a base method, chosen with
``plugin=<option>`` (conf/plugin/) and combined with CMI and with every base method it supports.

A technique does not fork a method. The base methods call a few hooks on ``method.plugin``,
which is this class (``plugin=none``: every hook leaves the method as it is) or a subclass that
overrides the hooks it needs:

- ``begin(iteration)``: before the method's losses of an iteration (the loop calls it);
- ``class_loss(c, net, real, syn, syn_images)``: a term added to the matching loss of class
  ``c`` by the distribution-matching methods (DM, IDM), from the matching net's embeddings of
  the real and synthetic batches (IID);
- ``real_batch(method, c, net)``: the real images of class ``c`` to match (the class-matching
  methods, before augmentation); None draws them at random (DREAM);
- ``initial_images(method, c, n)``: the ``n`` real images of class ``c`` the set starts from;
  None draws them at random (DREAM);
- ``stage(synthetic, iteration)``: a ``Stage``, which stored images the iteration uses and which
  it updates (the loop keeps the others fixed and computes CMI on the used ones), and the
  student's batch size; None: all images (SeqMatch, on MTT);
- ``start_epochs(iteration)``: the range [lo, hi) of MTT's expert start epochs; None: MTT's own.
"""

from collections import namedtuple

import torch

Stage = namedtuple("Stage", "visible trainable batch")  # masks over the stored images; batch size


class Plugin:
    name = "none"
    per_class = False  # whether class_loss adds a term (the methods then embed class by class)

    def __init__(self, seed: int = 0):
        pass

    def attach(self, method) -> None:
        method.plugin = self

    def begin(self, iteration: int) -> None:
        pass

    def class_loss(self, c: int, net, real, syn, syn_images):
        return 0.0

    def real_batch(self, method, c: int, net):
        return None

    def initial_images(self, method, c: int, n: int):
        return None

    def stage(self, synthetic, iteration: int):
        return None

    def start_epochs(self, iteration: int):
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def class_rows(labels: torch.Tensor, parts: int) -> list:
    """Split every class's stored images into ``parts`` consecutive subsets (sizes differing by
    at most one, larger first, e.g. 17/17/16 of 50): one boolean mask over ``labels`` per part."""
    masks = [torch.zeros_like(labels, dtype=torch.bool) for _ in range(parts)]
    for y in labels.unique():
        rows = (labels == y).nonzero().flatten()
        for mask, chunk in zip(masks, rows.tensor_split(parts), strict=True):
            mask[chunk] = True
    return masks
