"""Dataset Condensation with Gradient Matching (DC, Zhao et al., ICLR 2021) and with
Differentiable Siamese Augmentation (DSA, Zhao & Bilen, ICML 2021).

Each iteration draws a freshly initialized network and runs ``outer`` steps. Each step matches,
class by class, the gradients of the training loss on a real and a synthetic batch (the same
shared DSA draw on both for DSA):

    L = sum_c sum_layers sum_out (1 - cos(g_real, g_syn))     (the papers' layer-wise distance)

then, between steps, trains the network on the synthetic set for ``inner`` epochs. BatchNorm
networks first see a real batch in train mode and are then frozen (eval) for matching.
"""

from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from ..batching import gradient
from ..train import mixed_cross_entropy, train_classifier
from .base import ClassMatching


def layer_distance(g_real: torch.Tensor, g_syn: torch.Tensor) -> torch.Tensor:
    """Sum over output units of 1 - cosine similarity; biases and norm parameters are skipped."""
    if g_real.ndim == 1:
        return g_real.new_zeros(())
    g_real, g_syn = g_real.flatten(1), g_syn.flatten(1)
    cosine = (g_real * g_syn).sum(-1) / (g_real.norm(dim=-1) * g_syn.norm(dim=-1) + 1e-6)
    return (1 - cosine).sum()


class GradientMatching(ClassMatching):
    # The CMI reference (DC-DSA-DM/main.py) adds CMI inside the outer loop, before every image
    # update, with one proxy loaded per iteration before that loop.
    cmi_every_step = True

    def __init__(
        self,
        net,
        augment,
        batch_real: int,
        loops: list,
        lr_net: float,
        batch_train: int,
        bn_images_per_class: int,
        real,
        seed: int,
        device,
    ):
        super().__init__(real, augment, batch_real, seed, device, "gm")
        self.make_net = net
        self.outer, self.inner = (int(n) for n in loops)
        self.lr_net, self.batch_train, self.bn_images = lr_net, batch_train, bn_images_per_class

    def _freeze_batchnorm(self, net: nn.Module) -> None:
        norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        batch = torch.cat(
            [
                self.real.sample(c, self.bn_images, self.sampler)
                for c in range(self.real.num_classes)
            ]
        )
        net.train()
        with torch.no_grad():
            net(batch)  # running statistics from real data
        for module in norms:
            module.eval()

    def _match(self, net: nn.Module, params: list, synthetic) -> torch.Tensor:
        loss = 0.0
        for c, real, syn, syn_labels in self.class_pairs(synthetic, net):
            target = torch.full((len(real),), c, device=real.device)
            g_real = gradient(net, real, partial(mixed_cross_entropy, [(target, 1.0)]), params)
            g_syn = torch.autograd.grad(
                F.cross_entropy(net(syn), syn_labels), params, create_graph=True
            )
            loss = loss + sum(
                layer_distance(r.detach(), s) for r, s in zip(g_real, g_syn, strict=True)
            )
        return loss

    def losses(self, synthetic, iteration: int):
        net = self.fresh_network(f"gm/net/{iteration}")
        params = list(net.parameters())
        for step in range(self.outer):
            self._freeze_batchnorm(net)
            yield self._match(net, params, synthetic)
            if step == self.outer - 1:
                break
            images, labels = synthetic.decoded()
            # Plain SGD, as the references train the inner network (no momentum, no decay).
            train_classifier(
                net,
                images.detach(),
                labels,
                self.inner,
                lr=self.lr_net,
                momentum=0.0,
                weight_decay=0.0,
                batch_size=self.batch_train,
                generator=self.aug_gen,
                augment=self.augment,
            )
