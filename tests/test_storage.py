"""dataset.storage: real images in memory or memory-mapped from a decoded uint8 cache give the
same run; auto chooses by the memory budget; a damaged cache is refused."""

import json

import numpy as np
import pytest
import torch
from conftest import BASE, CIFAR_ARCHIVE, TINY, compose_config
from test_layouts import SMALL, tinyimagenet_tree

from cmidd.storage import DiskImages, channel_stats


def _config(cache, root, *overrides):
    return compose_config(
        [*TINY, "dataset=tinyimagenet", f"dataset.loader.root={root}", *SMALL, *overrides],
        cache_dir=cache,
    )


def test_disk_images_index_like_the_memory_tensor():
    pixels = np.random.default_rng(0).integers(0, 256, (7, 3, 4, 4), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    memory = (torch.from_numpy(pixels).float().div_(255) - torch.tensor(mean).view(1, -1, 1, 1)) / (
        torch.tensor(std).view(1, -1, 1, 1)
    )
    disk = DiskImages(pixels, mean, std, "cpu")
    index = torch.tensor([5, 0, 5, 2])
    assert len(disk) == 7 and disk.shape == memory.shape
    assert torch.equal(disk[index], memory[index]) and torch.equal(disk[2:6], memory[2:6])


def test_channel_stats_are_the_training_sets_mean_and_std():
    pixels = np.random.default_rng(1).integers(0, 256, (50, 3, 5, 5), dtype=np.uint8)
    mean, std = channel_stats(pixels, chunk=7)
    x = torch.from_numpy(pixels).double() / 255
    assert np.allclose(mean, x.mean(dim=(0, 2, 3))) and np.allclose(std, x.std(dim=(0, 2, 3)))


def test_memory_and_disk_give_the_same_run(tmp_path):
    from cmidd.synthetic import SyntheticSet
    from cmidd.tasks import distill

    root = tinyimagenet_tree(tmp_path / "tiny")
    runs = {}
    for storage in ("memory", "disk"):  # separate caches: each trains its own proxies
        cfg = _config(tmp_path / storage, root, f"dataset.storage={storage}", "cmi.weight=10")
        result = distill(cfg, tmp_path / f"run-{storage}")
        runs[storage] = result, SyntheticSet.load(tmp_path / f"run-{storage}" / "synthetic.pt")
    decoded = [p for p in (tmp_path / "disk" / "data" / "decoded").iterdir() if p.is_dir()]
    assert len(decoded) == 1 and (decoded[0] / "index.json").is_file()
    assert not (tmp_path / "memory" / "data" / "decoded").exists()
    (memory, memory_set), (disk, disk_set) = runs["memory"], runs["disk"]
    assert torch.equal(memory_set.images, disk_set.images)
    assert memory["accuracy"] == disk["accuracy"] and memory["cmi"] == disk["cmi"]


def test_auto_chooses_by_the_budget_and_says_so(tmp_path, caplog):
    from cmidd.tasks import load_real

    root = tinyimagenet_tree(tmp_path / "tiny")
    with caplog.at_level("INFO"):
        small = load_real(_config(tmp_path, root), "cpu")
        large = load_real(_config(tmp_path, root, "dataset.memory_budget_gb=0.0001"), "cpu")
    assert isinstance(small.train[0], torch.Tensor) and small.train_all is None
    assert isinstance(large.train[0], DiskImages) and len(large.train_all) == 18
    chosen = [r.getMessage() for r in caplog.records if "storage" in r.getMessage()]
    assert "storage memory (auto)" in chosen[0] and "storage disk (auto)" in chosen[1]
    assert torch.equal(small.train[1], large.train[1][0:6])
    assert torch.equal(small.test_images, large.test_images[0:6])
    draws = [real.sample_mixed(7, torch.Generator().manual_seed(0)) for real in (small, large)]
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    assert torch.equal(small.train_tensors()[0], large.train_tensors()[0][0:18])


def test_memory_over_the_budget_is_one_line(app_error, tmp_path):
    root = tinyimagenet_tree(tmp_path / "tiny")
    code, last = app_error(
        "dataset=tinyimagenet",
        f"dataset.loader.root={root}",
        "dataset.storage=memory",
        "dataset.memory_budget_gb=0.0001",
        *SMALL,
    )
    assert (
        code == 2
        and last.startswith("error: dataset.memory_budget_gb=0.0001: ")
        and ("dataset.storage=disk" in last)
    )


def test_a_damaged_cache_is_refused_naming_the_file(app_error, tmp_path, cache):
    from cmidd.tasks import load_real

    root = tinyimagenet_tree(tmp_path / "tiny")
    load_real(_config(cache, root, "dataset.storage=disk"), "cpu")
    (folder,) = [p for p in (cache / "data" / "decoded").iterdir() if p.is_dir()]  # and its lock
    assert set(json.loads((folder / "index.json").read_text())["sha256"]) == {
        "train.npy",
        "test.npy",
        "test_labels.npy",
    }
    damaged = bytearray((folder / "train.npy").read_bytes())
    damaged[-1] ^= 1
    (folder / "train.npy").write_bytes(damaged)
    code, last = app_error(
        "dataset=tinyimagenet", f"dataset.loader.root={root}", "dataset.storage=disk", *SMALL
    )
    assert code == 2 and str(folder / "train.npy") in last and "checksum" in last, last


def test_bad_storage_and_disk_digits_and_disk_zca_are_one_line(app_error, tmp_path):
    assert app_error("dataset.storage=tape")[1].startswith("error: dataset.storage=tape")
    assert "dataset.storage=disk" in app_error("dataset.storage=disk")[1]
    root = tinyimagenet_tree(tmp_path / "tiny")
    tiny = ["dataset=tinyimagenet", f"dataset.loader.root={root}", *SMALL]
    code, last = app_error(*tiny, "dataset.storage=disk", "zca.enabled=true")
    assert code == 2 and "zca.enabled=true" in last and "dataset.storage=memory" in last, last


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_ARCHIVE.is_file(), reason="no CIFAR-10 copy")
def test_the_cifar10_copy_gives_the_same_dm_run_in_memory_and_on_disk(tmp_path):
    from cmidd.synthetic import SyntheticSet
    from cmidd.tasks import distill

    sets = []
    for storage in ("memory", "disk"):
        cfg = compose_config(
            [*TINY, "dataset=cifar10_jpg", "cmi.weight=1", f"dataset.storage={storage}"],
            cache_dir=tmp_path / "cache",
        )
        distill(cfg, tmp_path / storage)
        sets.append(SyntheticSet.load(tmp_path / storage / "synthetic.pt").images)
    assert torch.equal(*sets)


@pytest.mark.parametrize(
    "method",
    [
        ["method=herding"],  # features of the proxy over every image of a class
        ["method=forgetting", "method.algorithm.epochs=2"],  # training on all images
    ],
    ids=["herding", "forgetting"],
)
def test_each_way_of_reading_real_data_gives_the_same_set_on_disk(method, tmp_path):
    from cmidd.synthetic import SyntheticSet
    from cmidd.tasks import distill

    root = tinyimagenet_tree(tmp_path / "tiny")
    sets = []
    for storage in ("memory", "disk"):
        overrides = [*BASE, "dataset=tinyimagenet", f"dataset.loader.root={root}", "ipc=2"]
        overrides += ["cmi.weight=1", f"dataset.storage={storage}", *method]
        cfg = compose_config(overrides, cache_dir=tmp_path / storage)
        assert distill(cfg, tmp_path / f"run-{storage}")["status"] == "finished"
        sets.append(SyntheticSet.load(tmp_path / f"run-{storage}" / "synthetic.pt").images)
    assert torch.equal(*sets)
