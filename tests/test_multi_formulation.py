"""IDC and IDM: multi-formulated synthetic sets (factor 2), with and without CMI, IPC 1 included."""

import pytest
import torch
import torch.nn.functional as F
from conftest import compose_config

from cmidd.cmi import empirical_cmi
from cmidd.methods import IDM
from cmidd.synthetic import SyntheticSet, decode, encode
from cmidd.tasks import distill, evaluate

FAST = {
    "idc": [
        "method.algorithm.inner_loop=2",
        "method.algorithm.n_data=32",
        "method.algorithm.batch_real=16",
    ],
    "idm": [
        "method.algorithm.batch_real=16",
        "method.algorithm.train_batch=32",
        "method.algorithm.train_steps=2",
        "method.algorithm.generate_interval=2",
    ],
}


def test_decoding_splits_each_image_into_factor_squared_upsampled_patches():
    smooth = F.interpolate(torch.rand(8, 3, 4, 4), size=(32, 32), mode="bilinear")
    stored = encode(smooth, 2)
    images, labels = decode(stored, torch.tensor([3, 7]), 2)
    assert stored.shape == (2, 3, 32, 32) and images.shape == (8, 3, 32, 32)
    assert labels.tolist() == [3] * 4 + [7] * 4
    # Decoding returns each tiled image in its place (to interpolation error), not another one.
    error = (images - smooth).abs().mean()
    assert error < 0.05 and error < (images - smooth.roll(1, 0)).abs().mean() / 3
    assert torch.equal(decode(stored, labels[:2], 1)[0], stored)


@pytest.mark.parametrize("method", ["idc", "idm"])
@pytest.mark.parametrize("ipc", [1, 10])
def test_runs_with_and_without_cmi_and_saves_the_factor(tiny, tmp_path, method, ipc, recwarn):
    common = [f"method={method}", f"ipc={ipc}", "iterations=2", *FAST[method]]
    with_cmi = distill(tiny(*common, "cmi.weight=100"), tmp_path / "cmi")
    without = distill(tiny(*common, "cmi=none"), tmp_path / "none")
    start = distill(tiny(*common, "cmi=none", "iterations=0"), tmp_path / "start")
    saved = [SyntheticSet.load(tmp_path / run / "synthetic.pt") for run in ("cmi", "none", "start")]
    assert all(s.factor == 2 and s.images.shape[0] == 10 * ipc for s in saved)
    assert not torch.allclose(saved[0].images, saved[2].images)
    assert not torch.allclose(saved[0].images, saved[1].images)
    # CMI is measured on the decoded set: non-zero even with one stored image per class.
    assert with_cmi["cmi"]["start"] > 0 and without["cmi"]["start"] == start["cmi"]["start"]
    assert not [w for w in recwarn if "identically 0" in str(w.message)]


def test_evaluating_a_saved_set_decodes_it(tiny, tmp_path):
    distilled = distill(
        tiny("method=idm", "iterations=1", "cmi=none", *FAST["idm"]), tmp_path / "run"
    )
    again = evaluate(
        tiny("task=evaluate", f"synthetic={tmp_path / 'run' / 'synthetic.pt'}"), tmp_path / "eval"
    )
    assert again["accuracy"] == distilled["accuracy"]


def test_cmi_at_ipc_one_is_positive_and_differentiable(tiny):
    from cmidd.nets import ConvNet

    stored = torch.randn(10, 1, 8, 8, requires_grad=True)
    images, labels = decode(stored, torch.arange(10), 2)
    proxy = ConvNet(in_channels=1, num_classes=10, image_size=8, width=8)
    cmi = empirical_cmi(proxy.embed(images), labels)
    cmi.backward()
    assert cmi.item() > 0 and stored.grad.abs().sum() > 0


def test_idm_pool_grows_every_interval_and_its_state_round_trips(tiny):
    from hydra.utils import instantiate

    from cmidd.tasks import load_real

    cfg = tiny("method=idm", *FAST["idm"])
    real = load_real(cfg, torch.device("cpu"))
    method = instantiate(cfg.method.algorithm)(real=real, seed=0, device=torch.device("cpu"))
    synthetic = SyntheticSet.from_real(real, 10, torch.Generator().manual_seed(0), factor=2)
    for iteration in range(5):
        for loss in method.losses(synthetic, iteration):
            loss.backward()
    assert len(method.pool) == 3 + 3  # new nets at iterations 0, 2 and 4
    copy = instantiate(cfg.method.algorithm)(real=real, seed=1, device=torch.device("cpu"))
    copy.load_state_dict(method.state_dict())
    assert isinstance(copy, IDM) and len(copy.pool) == 6 and copy.made == method.made
    first, restored = method.pool[0]["net"].state_dict(), copy.pool[0]["net"].state_dict()
    assert all(torch.equal(first[k], restored[k]) for k in first)


@pytest.mark.parametrize(
    "method,data,ipc",
    [
        ("idc", "cifar10", 10),
        ("idc", "cifar10", 50),
        ("idc", "svhn", 10),
        ("idc", "cifar100", 50),
        ("idm", "cifar10", 1),
        ("idm", "cifar10", 10),
        ("idm", "cifar10", 50),
        ("idm", "cifar100", 10),
    ],
)
def test_paper_presets_compose_with_the_papers_settings(method, data, ipc):
    cfg = compose_config(
        ["experiment=paper", f"method={method}", f"dataset={data}", f"ipc={ipc}", "cmi.weight=100"]
    )
    assert cfg.method.factor == 2 and cfg.method.algorithm.net.width == 128
    if method == "idc":
        assert (
            cfg.method.optimizer.lr
            == {
                ("cifar10", 10): 0.125,
                ("cifar10", 50): 0.625,
                ("svhn", 10): 0.125,
                ("cifar100", 50): 0.35,
            }[(data, ipc)]
        )
        assert cfg.iterations == 2000 and cfg.method.algorithm.inner_loop == 100
        assert cfg.method.algorithm.n_data == (500 if data == "svhn" else 2000)
        assert cfg.cmi.weight == 100  # given on the command line
    else:
        expected = {
            ("cifar10", 1): (0.5, 5000, 5, 10),
            ("cifar10", 10): (0.5, 256, 30, 10),
            ("cifar10", 50): (0.1, 256, 30, 10),
            ("cifar100", 10): (0.1, 256, 30, 50),
        }
        a = cfg.method.algorithm
        assert (a.ce_weight, a.batch_real, a.generate_interval, a.train_steps) == expected[
            (data, ipc)
        ]
        assert cfg.iterations == 20000 and cfg.method.optimizer.lr == 0.2
    # The paper's IDC weight x 10 classes: its reference sums per-class mean KLs (see idc.yaml).
    idc_table = compose_config(["experiment=paper", "method=idc", "dataset=cifar10", "ipc=10"])
    assert idc_table.cmi.weight == 1000
