"""Compiled forwards of the distillation path (``compute.fuse``).

Between its convolutions a ConvNet's iteration is a row of memory-bound passes (group norm, ReLU,
average pooling, each reading and writing the whole activation); ``torch.compile`` (inductor)
fuses them into one kernel per block, on the CPU and on CUDA. DM draws a fresh network every
iteration and the CMI term draws one proxy of a pool, so a compiled module per network would
compile again and again: here the weights are inputs of one compiled function per architecture
(``torch.func.functional_call``), compiled on first use and reused by every network of that
architecture (and shape of input) after it. Results equal the plain path up to the order of
floating-point sums (a test pins it).

``fused(net)`` is ``net`` itself when ``compute.fuse`` is false, else a wrapper whose ``embed``
and ``forward`` are compiled; ``batching.infer`` and ``batching.size`` see through it
(``_orig_mod``, as for ``torch.compile``'s own wrapper).
"""

import copy
import functools
import itertools

import torch
from torch import nn
from torch.func import functional_call

from .batching import setting

_graphs = {}  # (architecture, output, mode, device type) -> compiled functional_call


class _Output(nn.Module):
    """``net``'s ``output`` method as a module's forward, for ``functional_call``."""

    def __init__(self, net: nn.Module, output: str):
        super().__init__()
        self.net, self.output = net, output

    def forward(self, x):
        return getattr(self.net, self.output)(x)


def _compiled(net: nn.Module, arch: str, output: str, device: torch.device):
    key = (arch, type(net), output, net.training, device.type)
    if key not in _graphs:
        # Every compiled function here is functional_call's code, whose compiled variants
        # (architectures, outputs, modes, input shapes) share one cache: past its limit dynamo
        # would run the rest eagerly, with a warning only.
        config = torch._dynamo.config
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, name, max(getattr(config, name), 64))
        template = _Output(copy.deepcopy(net), output)  # its structure; the weights come per call
        _graphs[key] = torch.compile(functools.partial(functional_call, template))
    return _graphs[key]


class Fused(nn.Module):
    """``net`` with ``embed`` and ``forward`` through the compiled function of its architecture,
    called with its own parameters and buffers (gradients flow to them and to the input)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self._orig_mod = net
        self._arch = repr(net)  # the architecture, once: not on every forward

    def _call(self, output: str, x: torch.Tensor) -> torch.Tensor:
        net = self._orig_mod
        state = {
            f"net.{name}": value
            for name, value in itertools.chain(net.named_parameters(), net.named_buffers())
        }
        return _compiled(net, self._arch, output, x.device)(state, (x,))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._call("embed", x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._call("forward", x)


def fused(net: nn.Module) -> nn.Module:
    """``net`` with compiled forwards under ``compute.fuse``, else ``net``."""
    return Fused(net) if setting("fuse") else net
