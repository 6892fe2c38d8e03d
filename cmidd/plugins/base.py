"""Plug-in techniques: what earlier papers added on top of a base method, chosen with
``plugin=<option>`` (conf/plugin/) and combined with CMI and with every base method it supports.

A technique does not fork a method, and it never reads or writes a method's fields: a method
installs it (``Method.use``) and calls its hooks, passing what the hook needs. This class is
``plugin=none``, whose every hook leaves the method as it is; a technique overrides the hooks it
needs. The interface, in full:

- ``needs``: the pre-trained kinds it uses (``proxy``...), handed to ``provide`` by the run;
- ``batch_real``: the real images per class a class-matching method matches (and, IDC, trains
  its network on); None keeps the method's own (DREAM sets its own);
- ``per_class``: True if ``class_loss`` adds a term (methods then embed class by class);
- ``begin(iteration)``: before the method's losses of an iteration (the loop calls it);
- ``class_loss(c, net, real, syn, syn_images)``: a term added to the matching loss of class
  ``c`` by the distribution-matching methods (DM, IDM), from the matching net's embeddings of
  the real and synthetic batches and the synthetic images (IID);
- ``real_batch(c, real, net, n)``: ``n`` real images of class ``c`` of the data ``real`` to
  match, chosen by the matching ``net``; None draws them at random (DREAM);
- ``initial_images(c, real, n)``: the ``n`` real images of class ``c`` the set starts from;
  None draws them at random (DREAM);
- ``stage(synthetic, iteration)``: a ``Stage``: which stored images the iteration uses and which
  it updates (the loop keeps the others fixed and computes CMI on the used ones), and the
  student's batch size; None: all images (SeqMatch, on MTT);
- ``start_epochs(iteration)``: the range [lo, hi) of MTT's expert start epochs; None: MTT's own;
- ``trajectories(synthetic, iteration, real)``: the expert trajectories MTT matches in this
  iteration; None: the run's experts (SeqMatch's later stages have their own);
- ``state_dict``/``load_state_dict``: what a checkpoint keeps of it.
"""

from collections import namedtuple

import torch

Stage = namedtuple("Stage", "visible trainable batch")  # masks over the stored images; batch size


class Plugin:
    name = "none"
    needs = ()
    batch_real = None
    per_class = False

    def __init__(self, seed: int = 0):
        pass

    def provide(self, **pretrained) -> None:
        pass

    def begin(self, iteration: int) -> None:
        pass

    def class_loss(self, c: int, net, real, syn, syn_images):
        return 0.0

    def real_batch(self, c: int, real, net, n: int):
        return None

    def initial_images(self, c: int, real, n: int):
        return None

    def stage(self, synthetic, iteration: int):
        return None

    def start_epochs(self, iteration: int):
        return None

    def trajectories(self, synthetic, iteration: int, real):
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
