"""Dataset Condensation via Efficient Synthetic-Data Parameterization (IDC; Kim et al., ICML 2022).

Gradient matching on multi-formulated synthetic data, as in the reference code
(snu-mllab/Efficient-Dataset-Condensation, condense.py with --reproduce):

- every stored image holds factor x factor images (the synthetic set's ``factor``), matched
  after decoding; at most ``batch_syn_max`` decoded images per class enter one match;
- each iteration makes a fresh network and runs ``inner_loop`` steps; each step matches, class by
  class, the gradients of the conv weights only (``match_bias``/``match_fc`` off) on a real and
  a decoded synthetic batch under one shared strong augmentation draw, with the squared
  distance (``mse``), then trains the network on ``n_data`` real images (SGD with per-sample
  augmentation and CutMix), so matching sees networks at many stages of training on real data.

    L = sum_c sum_{conv layers} || g_real_c - g_syn_c ||^2
"""

import torch
from torch import nn
from torch.nn import functional as F

from ..train import cutmix_loss
from .base import ClassMatching


class IDC(ClassMatching):
    # The CMI reference (IDC/condense.py) adds CMI at every matching step, loading a proxy per
    # step.
    cmi_every_step = True
    new_proxy_every_step = True

    def __init__(
        self,
        net,
        augment,
        net_augment,
        batch_real: int,
        inner_loop: int,
        batch_syn_max: int,
        n_data: int,
        lr_net: float,
        momentum: float,
        weight_decay: float,
        cutmix_p: float,
        real,
        seed: int,
        device,
    ):
        super().__init__(real, augment, batch_real, seed, device, "idc")
        self.make_net, self.net_augment, self.inner_loop = net, net_augment, inner_loop
        self.batch_syn_max, self.n_data, self.cutmix_p = batch_syn_max, n_data, cutmix_p
        self.sgd = dict(lr=lr_net, momentum=momentum, weight_decay=weight_decay)

    def _conv_weights(self, net: nn.Module) -> list:
        # Only 4-d weights: the reference skips biases, norm parameters and the classifier.
        return [p for p in net.parameters() if p.ndim == 4]

    def _match(self, net: nn.Module, synthetic) -> torch.Tensor:
        params = self._conv_weights(net)
        loss = 0.0
        for c, real, syn, syn_labels in self.class_pairs(synthetic, net, self.batch_syn_max):
            target = torch.full((len(real),), c, device=real.device)
            g_real = torch.autograd.grad(F.cross_entropy(net(real), target), params)
            g_syn = torch.autograd.grad(
                F.cross_entropy(net(syn), syn_labels), params, create_graph=True
            )
            loss = loss + sum(
                (r.detach() - s).pow(2).sum() for r, s in zip(g_real, g_syn, strict=True)
            )
        return loss

    def _train_on_real(self, net: nn.Module, optimizer) -> None:
        for _ in range(max(1, self.n_data // self.batch_real)):
            images, labels = self.real.sample_mixed(self.batch_real, self.sampler)
            images = self.net_augment(images, self.aug_gen)
            loss = cutmix_loss(net, images, labels, self.aug_gen, self.cutmix_p)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def losses(self, synthetic, iteration: int):
        net = self.fresh_network(f"idc/net/{iteration}").train()
        optimizer = torch.optim.SGD(net.parameters(), **self.sgd)
        for _ in range(self.inner_loop):
            yield self._match(net, synthetic)
            self._train_on_real(net, optimizer)
