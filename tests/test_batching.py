"""No-grad forwards in micro-batches (compute.micro_batch): the same outputs, smaller forwards."""

import pytest
import torch
from test_distill import run

from cmidd import batching
from cmidd.augment import DSA
from cmidd.errors import UserError
from cmidd.nets import ConvNet, ResNet18
from cmidd.runtime import generator
from cmidd.train import accuracy, train_classifier


@pytest.fixture(autouse=True)
def fresh_setting(monkeypatch):
    """The default setting, and no footprint measured yet (the probe forward is then seen)."""
    monkeypatch.setattr(batching, "_footprints", {})
    with batching.micro_batches("auto"):
        yield


def forwards(net, output: str) -> list:
    """Batch sizes that reach ``getattr(net, output)``."""
    sizes, method = [], getattr(net, output)
    setattr(net, output, lambda x: sizes.append(len(x)) or method(x))
    return sizes


@pytest.mark.parametrize("width, expected", [(128, 16), (32, 64)])
def test_auto_sizes_cpu_batches_to_the_cache_with_the_same_embeddings(width, expected):
    net = ConvNet(3, 10, 32, width=width).train()
    images = torch.randn(200, 3, 32, 32)
    with batching.micro_batches(0):
        whole = batching.infer(net, images, "embed")
    sizes = forwards(net, "embed")
    split = batching.infer(net, images, "embed")
    # Two probe images, then near-equal parts of at most ``expected`` images: the first
    # activation, width x 32 x 32 floats per image, fits the 8 MB budget this often.
    assert sizes[0] == 2 and max(sizes[1:]) <= expected and sum(sizes[1:]) == 200
    assert len(sizes[1:]) == -(-200 // expected)
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)
    assert not split.requires_grad


def test_resnet_logits_and_test_accuracy_are_the_same_in_micro_batches():
    net = ResNet18(3, 10, 32).eval()
    images, labels = torch.randn(70, 3, 32, 32), torch.randint(0, 10, (70,))
    with batching.micro_batches(0):
        whole, acc_whole = batching.infer(net, images), accuracy(net, images, labels)
    with batching.micro_batches(8):
        sizes = forwards(net, "forward")
        split, acc_split = batching.infer(net, images), accuracy(net, images, labels)
    assert max(sizes) == 8 and len(sizes) == 2 * 9
    torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-5)
    assert acc_split == acc_whole


@pytest.mark.parametrize("setting", ["auto", 0, 4])
def test_batchnorm_in_training_is_never_split(setting):
    net = ConvNet(3, 10, 32, width=8, norm="batch").train()
    images = torch.randn(1500, 3, 32, 32)
    with batching.micro_batches(setting):
        sizes = forwards(net, "embed")
        batching.infer(net, images, "embed")
        assert sizes == [1500]  # batch statistics over all of them, as before, even over 1,024
        net.eval()  # running statistics: each image on its own
        batching.infer(net, images[:40], "embed")
        assert sizes[1:] == ([4] * 10 if setting == 4 else [40] if setting == 0 else [2, 40])


def test_dropout_and_tracked_instance_norm_are_not_per_sample():
    assert batching.per_sample(torch.nn.Sequential(torch.nn.Dropout(0.5).eval()))
    assert not batching.per_sample(torch.nn.Sequential(torch.nn.Dropout(0.5)))
    tracked = torch.nn.InstanceNorm2d(4, track_running_stats=True)
    assert not batching.per_sample(tracked) and batching.per_sample(tracked.eval())
    assert not batching.per_sample(torch.nn.BatchNorm2d(4, track_running_stats=False).eval())


def test_off_splits_only_no_grad_forwards_over_1024_images():
    net = ConvNet(1, 10, 8, width=4)
    with batching.micro_batches(0):
        sizes = forwards(net, "forward")
        batching.infer(net, torch.randn(2500, 1, 8, 8))
    assert sizes == [834, 833, 833]


@pytest.mark.parametrize("value", [-1, "fast", 1.5, True])
def test_a_bad_setting_is_one_line_naming_the_key(app_error, value):
    code, last = app_error(f"compute.micro_batch={value}")
    assert code == 2 and f"compute.micro_batch={value!r}" in last and "auto" in last, last
    with pytest.raises(UserError):
        batching.configure(micro_batch=value)


def test_a_gradient_from_micro_batches_is_the_whole_batch_gradient():
    net = ConvNet(3, 10, 16, width=16, depth=2)
    images, labels = torch.randn(30, 3, 16, 16), torch.randint(0, 10, (30,))
    params = list(net.parameters())

    def loss(logits, rows):
        return torch.nn.functional.cross_entropy(logits, labels[rows])

    whole = torch.autograd.grad(loss(net(images), slice(None)), params)
    with batching.micro_batches(4):
        sizes = forwards(net, "forward")
        split = batching.gradient(net, images, loss, params)
    assert sizes == [4] * 6 + [3] * 2
    for a, b in zip(split, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fuse", ["true", "false"])
def test_dm_distils_the_same_set_in_micro_batches(tiny, tmp_path, fuse):
    fused = f"method.algorithm.fuse_classes={fuse}"
    _, whole = run(tiny, tmp_path / "whole", fused, "compute.micro_batch=0")
    sizes = []
    original = batching.infer

    def spy(net, images, output="forward"):
        sizes.append(batching.size(net, images, output))
        return original(net, images, output)

    with pytest.MonkeyPatch.context() as patch:
        for module in ("cmidd.methods.dm", "cmidd.train"):
            patch.setattr(f"{module}.infer", spy)
        _, split = run(tiny, tmp_path / "split", fused, "compute.micro_batch=3")
    assert sizes and set(sizes) == {3}  # every real embedding and test pass at 3 images
    torch.testing.assert_close(split.images, whole.images, rtol=1e-4, atol=1e-5)


def trained(net_args: dict, micro_batch, cutmix: float, epochs: int = 3) -> tuple:
    torch.manual_seed(0)
    net = ConvNet(3, 10, 16, width=16, depth=2, **net_args)
    images, labels = torch.randn(40, 3, 16, 16), torch.arange(10).repeat(4)
    sizes, forward = [], net.forward
    net.forward = lambda x: sizes.append(len(x)) or forward(x)
    with batching.micro_batches(micro_batch):
        gen = generator(0, "t")
        train_classifier(net, images, labels, epochs, 0.01, 0.9, 0, 32, gen, DSA(), cutmix=cutmix)
    return net.state_dict(), sizes


def test_auto_splits_a_training_step_with_the_same_gradients():
    net = ConvNet(3, 10, 32, width=128, depth=2)
    images, labels = torch.randn(40, 3, 32, 32), torch.randint(0, 10, (40,))

    def loss(logits, rows):
        return torch.nn.functional.cross_entropy(logits, labels[rows])

    with batching.micro_batches(0):
        batching.backward(net, images, loss)
    whole = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    sizes = forwards(net, "forward")
    batching.backward(net, images, loss)
    assert sizes == [2, 14, 13, 13]  # the probe, then 16 at most (8 MB / 512 KB per image)
    for p, g in zip(net.parameters(), whole, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cutmix", [0.0, 1.0])
def test_training_in_micro_batches_takes_the_same_steps(cutmix):
    whole, whole_sizes = trained({}, 0, cutmix)
    split, split_sizes = trained({}, 6, cutmix)
    assert whole_sizes == [32, 8] * 3 and split_sizes == [6, 6, 5, 5, 5, 5, 4, 4] * 3
    for key in whole:
        torch.testing.assert_close(split[key], whole[key], rtol=1e-4, atol=1e-5)


def test_training_a_batchnorm_net_is_never_split():
    whole, _ = trained({"norm": "batch"}, 0, 0.0)
    split, sizes = trained({"norm": "batch"}, 6, 0.0)
    assert sizes == [32, 8] * 3
    assert all(torch.equal(split[key], whole[key]) for key in whole)


def test_dsa_distils_the_same_set_in_micro_batches(tiny, tmp_path):
    dsa = ["method=dsa", "method.algorithm.loops=[2,2]", "iterations=2", "cmi.weight=10"]
    _, whole = run(tiny, tmp_path / "whole", *dsa, "compute.micro_batch=0")
    _, split = run(tiny, tmp_path / "split", *dsa, "compute.micro_batch=5")
    _, start = run(tiny, tmp_path / "start", *dsa, "iterations=0")
    assert not torch.allclose(start.images, whole.images)
    torch.testing.assert_close(split.images, whole.images, rtol=1e-4, atol=1e-5)


def test_idm_trains_its_pool_nets_and_distils_the_same_set_in_micro_batches(tiny, tmp_path):
    idm = ["method=idm", "iterations=2", "cmi=none", "method.algorithm.batch_real=16"]
    idm += ["method.algorithm.train_batch=32", "method.algorithm.train_steps=2"]
    _, whole = run(tiny, tmp_path / "whole", *idm, "compute.micro_batch=0")
    _, split = run(tiny, tmp_path / "split", *idm, "compute.micro_batch=5")
    torch.testing.assert_close(split.images, whole.images, rtol=1e-4, atol=1e-5)


def test_dm_never_fuses_the_classes_of_a_batchnorm_net(tiny, tmp_path, monkeypatch):
    seen = []
    original = batching.infer
    monkeypatch.setattr(
        "cmidd.methods.dm.infer",
        lambda net, x, output: seen.append(len(x)) or original(net, x, output),
    )
    bn = ["method.algorithm.net.norm=batch", "method.algorithm.fuse_classes=true", "iterations=1"]
    run(tiny, tmp_path / "bn", *bn)
    assert seen == [16] * 10  # one forward per class of batch_real images, not one of 160
    seen.clear()
    run(tiny, tmp_path / "instance", "method.algorithm.fuse_classes=true", "iterations=1")
    assert seen == [160]
