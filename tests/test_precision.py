"""precision=bf16, compute.channels_last and compute.compile: where each applies, and what it
leaves alone."""

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_distill import run

from cmidd import batching
from cmidd.checkpoint import differing_keys
from cmidd.evaluate import Evaluator
from cmidd.nets import ConvNet
from cmidd.runtime import generator
from cmidd.train import train_classifier


@pytest.fixture(autouse=True)
def default_settings():
    """The defaults, whole batches: no footprint probe (a float32 NCHW forward) in the hooks."""
    with batching.settings(micro_batch=0, precision=32, channels_last=False, compile="none"):
        yield


def conv_inputs(net) -> list:
    """(dtype, channels-last?) of every input to the net's first convolution and (dtype) of
    its output."""
    seen = []
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))

    def record(module, inputs, output):
        try:
            last = inputs[0].is_contiguous(memory_format=torch.channels_last)
        except RuntimeError:  # not answered inside vmap (the vectorized trainer)
            last = None
        seen.append((last, output.dtype))

    conv.register_forward_hook(record)
    return seen


def test_bf16_computes_no_grad_forwards_in_bf16_and_returns_float32_close_to_float32():
    net = ConvNet(3, 10, 16, width=16, depth=2).eval()
    images = torch.randn(40, 3, 16, 16)
    exact = batching.infer(net, images, "embed")
    seen = conv_inputs(net)
    with batching.settings(precision="bf16"):
        low = batching.infer(net, images, "embed")
    assert {dtype for _, dtype in seen} == {torch.bfloat16}
    assert low.dtype == torch.float32 and not torch.equal(low, exact)
    assert torch.allclose(low, exact, rtol=0.05, atol=0.05)


def train(net, images, labels, **kw):
    return train_classifier(net, images, labels, 2, 0.01, 0.9, 5e-4, 16, generator(0, "t"), **kw)


def test_bf16_trains_only_where_mixed_and_keeps_float32_weights():
    images, labels = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    with batching.settings(precision="bf16"):
        proxy = ConvNet(3, 10, 16, width=8, depth=2)
        proxy_seen = conv_inputs(proxy)
        train(proxy, images, labels)  # proxy, expert, teacher training: never in bf16
        student = ConvNet(3, 10, 16, width=8, depth=2)
        student_seen = conv_inputs(student)
        train(student, images, labels, mixed=True)
    assert {d for _, d in proxy_seen} == {torch.float32}
    assert {d for _, d in student_seen} == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in student.parameters())


def test_channels_last_feeds_the_net_nhwc_batches_with_the_same_results():
    net = ConvNet(3, 10, 16, width=8, depth=2)
    twin = copy.deepcopy(net)
    images, labels = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    whole = batching.infer(net, images)
    seen = conv_inputs(net)
    with batching.settings(channels_last=True):
        nhwc = batching.infer(net, images)
        trained = train(net, images, labels)
    assert seen and all(last for last, _ in seen)
    assert torch.allclose(nhwc, whole, atol=1e-5)
    reference = train(twin, images, labels)
    for a, b in zip(trained.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_compiled_evaluation_nets_train_the_same_weights(tiny):
    from hydra.utils import instantiate
    from torch._dynamo.utils import counters

    from cmidd.tasks import load_real

    real = load_real(tiny(), "cpu")
    images, labels = real.sample_mixed(20, generator(0, "set"))
    net = {"_target_": "cmidd.nets.ConvNet", "_partial_": True, "width": 8, "depth": 2}
    evaluator = Evaluator({"convnet": instantiate(net)}, 2, 3, 0.01, 0.9, 5e-4, 16)
    plain = evaluator(images, labels, real, seed=0)
    torch._dynamo.reset()
    counters.clear()
    with batching.settings(compile="eager"):
        through = evaluator(images, labels, real, seed=0)
    # The forwards went through dynamo, and the wrapper shares the net's weights: training
    # through it trains the net that is tested.
    assert counters["stats"]["unique_graphs"] > 0
    assert through["convnet"]["runs"] == pytest.approx(plain["convnet"]["runs"])


def test_the_gpu_options_take_the_sequential_path_on_cuda_under_auto():
    evaluator = Evaluator({"convnet": ConvNet}, 5, 1, 0.01, 0.9, 5e-4, 16)
    cuda = torch.device("cuda")
    assert evaluator.vectorized(cuda)
    for option in ({"compile": "eager"}, {"channels_last": True}, {"precision": "bf16"}):
        with batching.settings(**option):
            assert not evaluator.vectorized(cuda)


def test_pretrained_networks_are_tested_in_float32_under_bf16(tiny, monkeypatch):
    from types import SimpleNamespace

    from cmidd import pretrained

    precisions = []
    kind = SimpleNamespace(get=lambda *a: precisions.append(batching.setting("precision")))
    monkeypatch.setitem(pretrained.KINDS, "proxy", kind)
    with batching.settings(precision="bf16"):
        pretrained.get("proxy", tiny(), None, "cpu")
    assert precisions == [32]


@pytest.mark.parametrize(
    "override, key",
    [
        ("precision=16", "precision=16"),
        ("precision=32.0", "precision=32.0"),
        ("compute.channels_last=maybe", "compute.channels_last='maybe'"),
        ("compute.compile=fastest", "compute.compile='fastest'"),
    ],
)
def test_a_bad_option_is_one_line_naming_the_key(app_error, override, key):
    code, last = app_error(override)
    assert code == 2 and key in last and "invalid" in last, last


def test_precision_inside_compute_is_one_line(app_error):
    code, last = app_error("+compute.precision=bf16")
    assert code == 2 and "compute.precision is not a setting" in last, last


def test_bf16_names_its_runs_and_is_checked_on_resume_unlike_the_speed_options(tiny, tmp_path):
    results, _ = run(tiny, tmp_path, "precision=bf16", "iterations=2")
    assert results["config"]["precision"] == "bf16" and results["accuracy"]
    config = OmegaConf.load(Path(__file__).parents[1] / "conf" / "config.yaml")
    excluded = config.hydra.job.config.override_dirname.exclude_keys
    assert {"compute.channels_last", "compute.compile"} <= set(excluded)
    assert "precision" not in excluded
    saved = {"precision": 32, "compute": {"compile": "none", "channels_last": False}}
    assert differing_keys(saved, {**saved, "precision": "bf16"}) == ["precision"]
    speed = {"precision": 32, "compute": {"compile": "inductor", "channels_last": True}}
    assert differing_keys(saved, speed) == []
    assert differing_keys({}, {"precision": 32}) == []  # a checkpoint from before the option


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.cuda
@cuda
def test_on_cuda_bf16_and_channels_last_forwards_stay_close_to_float32():
    net = ConvNet(3, 10, 32, width=32).cuda().eval()
    images = torch.randn(300, 3, 32, 32, device="cuda")
    exact = batching.infer(net, images, "embed")
    seen = conv_inputs(net)
    with batching.settings(precision="bf16", channels_last=True):
        fast = batching.infer(net, images, "embed")
    assert seen == [(True, torch.bfloat16)]
    assert fast.dtype == torch.float32 and torch.allclose(fast, exact, rtol=0.05, atol=0.05)


@pytest.mark.cuda
@cuda
def test_on_cuda_inductor_compiled_evaluation_trains_the_tested_net(tiny):
    from hydra.utils import instantiate
    from torch._dynamo.utils import counters

    from cmidd.tasks import load_real

    real = load_real(tiny("device=cuda"), "cuda")
    images, labels = real.sample_mixed(50, generator(0, "set"))
    net = {"_target_": "cmidd.nets.ConvNet", "_partial_": True, "width": 16, "depth": 2}
    evaluator = Evaluator({"convnet": instantiate(net)}, 1, 20, 0.01, 0.9, 5e-4, 25)
    plain = evaluator(images, labels, real, seed=0)["convnet"]["mean"]
    counters.clear()
    with batching.settings(compile="inductor", precision="bf16", channels_last=True):
        fast = evaluator(images, labels, real, seed=0)["convnet"]["mean"]
    assert counters["stats"]["unique_graphs"] > 0
    assert abs(fast - plain) < 0.1 and fast > 0.3  # trained: digits are far above 0.1 chance
