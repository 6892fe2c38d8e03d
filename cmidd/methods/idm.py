"""Improved Distribution Matching (IDM; Zhao et al., "Improved Distribution Matching for Dataset
Condensation", CVPR 2023).

DM plus three changes, each as in the reference code (uitrbn/IDM, IDM_cifar10.py):

- partitioning and expansion: every stored image holds factor x factor images (the synthetic
  set's ``factor``), matched and evaluated after decoding;
- a pool of models trained on real data instead of only random networks: it starts with
  ``pool_start`` random nets and gains one every ``generate_interval`` iterations, iteration 0
  included (the oldest
  leaves beyond ``pool_max``); each iteration one pool net is used for matching, and
  ``fetch_nets`` pool nets then take ``train_steps`` SGD steps on random real batches;
- class-aware distribution regularization: a cross-entropy term on the augmented synthetic
  images, weighted by ``ce_weight`` times the matching net's training accuracy in percent
  (measured on its real batches since the last reset, every ``meter_reset`` iterations):

    L = sum_c || mean f(aug(real_c)) - mean f(aug(syn_c)) ||^2 + ce_weight * acc% * CE(syn_c)
"""

from functools import partial

import torch
from torch.nn import functional as F

from ..batching import backward, infer
from ..fused import fused
from .base import ClassMatching


def _counted_cross_entropy(entry: dict, labels, logits, rows) -> torch.Tensor:
    """The cross-entropy of a pool net on ``rows`` of its batch, counting its correct answers
    (IDM's accuracy-weighted CE term reads them)."""
    entry["correct"] += int((logits.argmax(1) == labels[rows]).sum())
    return F.cross_entropy(logits, labels[rows])


class IDM(ClassMatching):
    def __init__(
        self,
        net,
        batch_real: int,
        augment,
        real,
        seed: int,
        device,
        ce_weight: float,
        pool_start: int,
        pool_max: int,
        generate_interval: int,
        fetch_nets: int,
        train_steps: int,
        train_batch: int,
        lr_net: float,
        momentum: float,
        weight_decay: float,
        meter_reset: int,
    ):
        super().__init__(real, augment, batch_real, seed, device, "idm")
        self.make_net, self.ce_weight = net, ce_weight
        self.pool_max, self.interval, self.meter_reset = pool_max, generate_interval, meter_reset
        self.fetch_nets, self.train_steps, self.train_batch = fetch_nets, train_steps, train_batch
        self.sgd = dict(lr=lr_net, momentum=momentum, weight_decay=weight_decay)
        self.pool, self.made = [], 0  # pool entries: {net, optimizer, correct, seen}
        for _ in range(pool_start):
            self._push()

    def _push(self) -> None:
        net = self.fresh_network(f"idm/pool/{self.made}").train()
        self.made += 1
        self.pool.append(
            {
                "net": net,
                "optimizer": torch.optim.SGD(net.parameters(), **self.sgd),
                "correct": 0,
                "seen": 0,
            }
        )
        if len(self.pool) > self.pool_max:
            self.pool.pop(0)

    def _pick(self, count: int) -> list:
        order = torch.randperm(len(self.pool), generator=self.sampler)[:count]
        return [self.pool[i] for i in order.tolist()]

    def _train(self, entry: dict) -> None:
        net, optimizer = entry["net"], entry["optimizer"]
        for _ in range(self.train_steps):
            images, labels = self.real.sample_mixed(self.train_batch, self.sampler)
            optimizer.zero_grad(set_to_none=True)
            backward(net, images, partial(_counted_cross_entropy, entry, labels))
            optimizer.step()
            entry["seen"] += len(labels)

    def losses(self, synthetic, iteration: int):
        if iteration % self.interval == 0:
            self._push()
        if iteration % self.meter_reset == 0:
            for entry in self.pool:
                entry["correct"] = entry["seen"] = 0
        entry = self._pick(1)[0]
        net = entry["net"].requires_grad_(False)
        accuracy = 100.0 * entry["correct"] / entry["seen"] if entry["seen"] else 0.0
        loss, view = 0.0, fused(net)  # compiled under compute.fuse
        for c, real, syn, syn_labels in self.class_pairs(synthetic, net):
            real_features = infer(view, real, "embed")
            features = view.embed(syn)
            loss = loss + (real_features.mean(0) - features.mean(0)).pow(2).sum()
            loss = loss + self.plugin.class_loss(c, net, real_features, features, syn)
            if self.ce_weight > 0 and accuracy > 0:
                # Every cmidd network's forward is classifier(embed(x)): reuse the features.
                logits = net.classifier(features)
                loss = loss + self.ce_weight * accuracy * F.cross_entropy(logits, syn_labels)
        net.requires_grad_(True)
        yield loss
        for trained in self._pick(self.fetch_nets):
            self._train(trained)

    def state_dict(self) -> dict:
        pool = [
            {
                "net": e["net"].state_dict(),
                "optimizer": e["optimizer"].state_dict(),
                "correct": e["correct"],
                "seen": e["seen"],
            }
            for e in self.pool
        ]
        return {**super().state_dict(), "pool": pool, "made": self.made}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.pool = []
        for saved in state["pool"]:
            self._push()  # a net of the right shape; its weights are then the saved ones
            entry = self.pool[-1]
            entry["net"].load_state_dict(saved["net"])
            entry["optimizer"].load_state_dict(saved["optimizer"])
            entry.update(correct=saved["correct"], seen=saved["seen"])
        self.made = state["made"]
