"""The CMI regularizer against Eq. 10 of the paper, computed by brute force."""

import math

import pytest
import torch

from cmidd.cmi import CMITerm, empirical_cmi, per_class_cmi
from cmidd.errors import UserError
from cmidd.pretrained import ProxyPool


def brute_force_cmi(outputs, labels):
    """(1/|S|) sum_y sum_{s in S_y} KL(P_s || Q_y), in float64 with explicit loops."""
    outputs = outputs.double()
    total = 0.0
    for y in labels.unique().tolist():
        p = torch.softmax(outputs[labels == y], dim=1)
        q = p.mean(0)
        for p_s in p:
            total += sum(
                float(p_s[m]) * math.log(float(p_s[m] / q[m])) for m in range(len(q)) if p_s[m] > 0
            )
    return total / len(outputs)  # a float: pytest.approx compares numbers, not 0-d tensors


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    return torch.randn(30, 7, generator=gen) * 3, torch.randint(0, 4, (30,), generator=gen)


def test_matches_brute_force(batch):
    outputs, labels = batch
    assert empirical_cmi(outputs, labels).item() == pytest.approx(
        brute_force_cmi(outputs, labels), rel=1e-5
    )


def test_non_negative_and_zero_for_identical_outputs(batch):
    outputs, labels = batch
    assert empirical_cmi(outputs, labels) > 0
    same = torch.randn(4, 7)[labels]  # every output of a class is the same vector
    assert empirical_cmi(same, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_single_image_per_class_is_zero():
    assert empirical_cmi(torch.randn(10, 5), torch.arange(10)).item() == pytest.approx(
        0.0, abs=1e-7
    )


def test_order_does_not_matter(batch):
    outputs, labels = batch
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(
        empirical_cmi(outputs, labels), empirical_cmi(outputs[perm], labels[perm])
    )


def test_per_class_agrees_with_whole_set_in_value_and_gradient(batch):
    _, labels = batch
    images = torch.randn(30, 3, 4, 4, requires_grad=True)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 16))
    whole = empirical_cmi(net(images), labels)
    per_class = per_class_cmi(net, images, labels)
    assert per_class.item() == pytest.approx(whole.item(), rel=1e-6)
    (g_whole,) = torch.autograd.grad(whole, images)
    (g_class,) = torch.autograd.grad(per_class, images)
    assert torch.allclose(g_whole, g_class, atol=1e-7)


def test_gradient_is_that_of_eq10(batch):
    outputs, labels = batch
    outputs = outputs.double().requires_grad_(True)
    # Finite differences of Eq. 10 itself, the centroid recomputed from the perturbed outputs.
    # (Q_y minimizes sum_s KL(P_s || Q), so its own share of the gradient is zero: a detached
    # centroid would pass too; the implementation keeps it in the graph, as the paper does.)
    assert torch.autograd.gradcheck(lambda z: empirical_cmi(z, labels), (outputs,))
    (grad,) = torch.autograd.grad(empirical_cmi(outputs, labels), outputs)
    assert grad.abs().sum() > 0


def test_gradient_reaches_the_synthetic_images(batch):
    _, labels = batch
    images = torch.randn(30, 3, 4, 4, requires_grad=True)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 16))
    empirical_cmi(net(images), labels).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_finite_for_extreme_outputs():
    labels = torch.tensor([0, 0, 1, 1])
    for scale in (1e4, 1e-8):
        outputs = (torch.randn(4, 64) * scale).requires_grad_(True)
        value = empirical_cmi(outputs, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(outputs.grad).all()
        assert value.item() == pytest.approx(
            brute_force_cmi(outputs.detach(), labels), rel=1e-3, abs=1e-9
        )


def test_term_uses_the_configured_space_and_draws_proxies(monkeypatch):
    nets = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5)) for _ in range(3)]
    for net in nets:
        net.embed = lambda x, net=net: net[0](x) * 2.0  # a "feature" space distinct from forward
    pool = ProxyPool(nets)
    images, labels = torch.randn(8, 3, 2, 2), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    feature = CMITerm(torch.Generator().manual_seed(0), "feature")
    probability = CMITerm(torch.Generator().manual_seed(0), "probability")
    assert feature.measure(images, labels) is None  # no pool: not measured
    feature.use(pool)
    assert feature.measure(images, labels) is None  # no measuring pool: not measured
    measuring = ProxyPool(nets[2:])  # the set's CMI is graded by another network than pool.first
    feature.use(pool, measuring)
    probability.use(pool, measuring)
    assert feature.measure(images, labels) == pytest.approx(
        empirical_cmi(nets[2].embed(images), labels).item()
    )
    assert feature.measure(images, labels, in_pool=True) == pytest.approx(
        empirical_cmi(nets[0].embed(images), labels).item()
    )
    whole = feature.measure(images, labels)
    monkeypatch.setattr("cmidd.cmi.MEASURE_CHUNK", 3)  # in chunks, as the whole training split
    assert feature.measure(images, labels) == pytest.approx(whole)
    assert probability.measure(images, labels) == pytest.approx(
        empirical_cmi(nets[2](images), labels).item()
    )
    drawn = {id(pool.sample(torch.Generator().manual_seed(s))) for s in range(20)}
    assert len(drawn) == 3
    with pytest.raises(UserError, match="cmi.space=logits is invalid"):
        CMITerm(torch.Generator(), "logits")
