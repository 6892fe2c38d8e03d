"""Datasets load into normalized per-class tensors; the CIFAR-10 JPEG preset works when present."""

import pytest
import torch
from conftest import CIFAR_ARCHIVE, compose_config
from hydra.utils import instantiate


def test_digits_loads_with_a_fixed_split_and_its_own_statistics():
    real = instantiate(compose_config().dataset.loader, device="cpu")
    again = instantiate(compose_config().dataset.loader, device="cpu")
    assert real.num_classes == 10 and real.shape == (1, 8, 8)
    assert sum(len(x) for x in real.train) + len(real.test_labels) == 1797
    assert all(torch.equal(a, b) for a, b in zip(real.train, again.train, strict=True))
    images, _ = real.train_tensors()
    assert images.mean().abs() < 1e-4 and (images.std() - 1).abs() < 1e-2
    gen = torch.Generator().manual_seed(0)
    sample = real.sample(3, 1000, gen)
    assert len(sample) == len(real.train[3])  # capped at the class size, no repeats
    assert len(torch.unique(sample, dim=0)) == len(sample)


@pytest.mark.skipif(
    not CIFAR_ARCHIVE.exists(), reason="../shared/data/cifar10-jpg.tar.gz is absent"
)
@pytest.mark.slow  # over a minute on 2 cores: CI runs it (pytest -m slow)
def test_cifar10_jpg_preset_unpacks_once_and_loads(tmp_path):
    cfg = compose_config(["dataset=cifar10_jpg"], cache_dir=tmp_path)
    real = instantiate(cfg.dataset.loader, device="cpu")
    assert real.num_classes == 10 and real.shape == (3, 32, 32)
    assert [len(x) for x in real.train] == [5000] * 10 and len(real.test_labels) == 10000
    assert real.class_names[:2] == ["airplane", "automobile"]
    # Normalized with the reference code's CIFAR-10 statistics, whose "std" (0.20) is smaller than
    # the pixel std (0.25): zero mean and a std of about 1.2, as in the papers' runs.
    assert abs(real.test_images.mean().item()) < 0.1 and 1.1 < real.test_images.std().item() < 1.35
    assert (tmp_path / "data" / "cifar10-jpg" / "train").is_dir()
    # The decoded tensors are kept beside the unpacked files, and a second load reads them.
    assert (tmp_path / "data" / ".cifar10-jpg.uint8.pt").is_file()
    again = instantiate(cfg.dataset.loader, device="cpu")
    assert (
        torch.equal(again.test_images, real.test_images) and again.class_names == real.class_names
    )
    assert torch.equal(again.train[3], real.train[3])
