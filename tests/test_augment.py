"""DSA: siamese draws, determinism from the generator, differentiability."""

import pytest
import torch

from cmidd.augment import DSA, OPS


@pytest.mark.parametrize("op", OPS)
def test_each_op_is_siamese_deterministic_and_differentiable(op):
    dsa = DSA(strategy=[op])
    real, syn = torch.randn(16, 3, 12, 12), torch.randn(4, 3, 12, 12, requires_grad=True)
    params = dsa.draw(16, (12, 12), torch.Generator().manual_seed(0))
    # Siamese: a synthetic sample gets exactly the transform of the real sample at its index.
    assert torch.equal(dsa.apply(real[:4], params), dsa.apply(real, params)[:4])
    again = dsa.draw(16, (12, 12), torch.Generator().manual_seed(0))
    assert torch.equal(dsa.apply(real, params), dsa.apply(real, again))
    out = dsa.apply(syn, params)
    assert out.shape == syn.shape
    out.square().sum().backward()
    assert syn.grad.abs().sum() > 0


@pytest.mark.parametrize("op", OPS)
def test_a_shared_draw_gives_every_image_of_both_batches_the_same_transform(op):
    dsa = DSA(strategy=[op])
    image = torch.randn(1, 3, 12, 12)
    params = dsa.draw(16, (12, 12), torch.Generator().manual_seed(3), shared=True)
    out = dsa.apply(image.expand(16, -1, -1, -1), params)
    assert torch.allclose(out, out[:1].expand_as(out))
    assert torch.equal(dsa.apply(image, params), out[:1])


def test_ops_change_images_and_draws_vary():
    x = torch.randn(8, 3, 16, 16)
    gen = torch.Generator().manual_seed(1)
    drawn = {DSA().draw(8, (16, 16), gen)["op"] for _ in range(60)}
    assert drawn == set(OPS)
    for op in ("color", "crop", "cutout", "scale", "rotate"):
        assert not torch.allclose(DSA(strategy=[op])(x, gen), x)


def test_cutout_zeroes_a_square_of_half_the_side():
    dsa = DSA(strategy=["cutout"])
    out = dsa(torch.ones(32, 1, 16, 16), torch.Generator().manual_seed(0))
    zeros = (out == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() > 0


def test_unknown_op_is_rejected():
    with pytest.raises(ValueError, match="strategy"):
        DSA(strategy=["color", "mixup"])


def test_composed_augmentation_applies_every_op_in_turn():
    x = torch.rand(4, 3, 16, 16)
    composed = DSA(strategy=["flip", "cutout"], compose=True, flip=1.0)
    draw = composed.draw(4, (16, 16), torch.Generator().manual_seed(0), shared=True)
    assert [step["op"] for step in draw["steps"]] == ["flip", "cutout"]
    by_hand = DSA._cutout(x.flip(3), draw["steps"][1])
    assert torch.equal(composed.apply(x, draw), by_hand)
