"""compute.fuse (cmidd/fused.py): the distillation path compiled gives the plain path's set, up
to the order of floating-point sums. Compiling takes a minute on a CPU: slow."""

import pytest
import torch

from cmidd import batching
from cmidd.components import components
from cmidd.distill import Distillation
from cmidd.fused import Fused, fused
from cmidd.nets.convnet import ConvNet

pytestmark = pytest.mark.slow


def _distilled(cfg, out):
    out.mkdir(parents=True)
    parts = components(cfg)
    Distillation(parts, cfg.iterations, out).run()
    return parts.synthetic.images.detach().cpu()


CUDA = pytest.param(
    "cuda",
    marks=[
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    ],
)


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_a_fused_dm_cmi_run_gives_the_plain_runs_set(tiny, tmp_path, device):
    overrides = ["method=dm", "cmi.weight=100", "proxy.build_if_missing=true", "iterations=4"]
    overrides.append(f"device={device}")
    plain = _distilled(tiny(*overrides), tmp_path / "plain")
    compiled = _distilled(tiny(*overrides, "compute.fuse=true"), tmp_path / "fused")
    batching.configure(fuse=False)
    start = components(tiny(*overrides)).synthetic.images.detach().cpu()
    assert (plain - start).abs().max() > 1e-3  # the runs moved the set
    # Tolerance: 4 iterations of float32 sums in another order (measured: < 1e-6).
    torch.testing.assert_close(compiled, plain, rtol=0, atol=1e-5)


def test_networks_of_one_architecture_share_one_compiled_function():
    torch.manual_seed(0)
    nets = [ConvNet(1, 10, 8, width=8).train().requires_grad_(False) for _ in range(2)]
    x = torch.randn(6, 1, 8, 8, requires_grad=True)
    with batching.settings(fuse=True):
        wrapped = [fused(net) for net in nets]
    assert all(isinstance(w, Fused) for w in wrapped)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for net, w in zip(nets, wrapped, strict=True):
            torch.testing.assert_close(w.embed(x), net.embed(x), rtol=0, atol=1e-5)
            (grad,) = torch.autograd.grad(w.embed(x).pow(2).sum(), x)
            (plain,) = torch.autograd.grad(net.embed(x).pow(2).sum(), x)
            torch.testing.assert_close(grad, plain, rtol=0, atol=1e-5)
    assert not batching.per_sample(fused_bn := Fused(ConvNet(1, 10, 8, width=8, norm="batch")))
    assert batching.size(fused_bn, x, "embed") == len(x)  # seen through, as torch.compile's own
