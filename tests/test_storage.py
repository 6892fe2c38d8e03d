"""dataset.storage: real images in memory, memory-mapped from a decoded uint8 cache, or streamed
from their files give the same run; auto chooses by the budgets; a damaged cache is refused."""

import json

import numpy as np
import pytest
import torch
from conftest import BASE, CIFAR_ARCHIVE, TINY, compose_config
from test_layouts import SMALL, tinyimagenet_tree

from cmidd.data.storage import DiskImages, channel_stats
from cmidd.data.stream import Reader, StreamImages

STORAGES = ("memory", "disk", "stream")


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


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_images_index_like_the_memory_tensor(workers):
    pixels = torch.randint(0, 256, (9, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    files = torch.utils.data.TensorDataset(pixels.to(torch.uint8), torch.zeros(9))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    memory = (pixels.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / (
        torch.tensor(std).view(1, -1, 1, 1)
    )
    rows = np.array([8, 1, 4, 6, 2, 0, 7])  # a class's rows of the split
    stream = StreamImages(Reader(files, workers, "cpu"), rows, (3, 4, 4), mean, std, "cpu")
    index = torch.tensor([5, 0, 5, 2, 6])
    assert len(stream) == 7 and stream.shape == (7, 3, 4, 4)
    for _ in range(2):  # the reader's workers serve request after request
        assert torch.equal(stream[index], memory[rows[index.numpy()]])
        assert torch.equal(stream[2:6], memory[rows[2:6]])
    assert stream[torch.tensor([], dtype=torch.long)].shape == (0, 3, 4, 4)


def test_channel_stats_are_the_training_sets_mean_and_std():
    pixels = np.random.default_rng(1).integers(0, 256, (50, 3, 5, 5), dtype=np.uint8)
    mean, std = channel_stats(pixels, chunk=7)
    x = torch.from_numpy(pixels).double() / 255
    assert np.allclose(mean, x.mean(dim=(0, 2, 3))) and np.allclose(std, x.std(dim=(0, 2, 3)))


def test_memory_disk_and_stream_give_the_same_run(tmp_path):
    from cmidd.synthetic import SyntheticSet
    from cmidd.tasks import distill

    root = tinyimagenet_tree(tmp_path / "tiny")
    runs = {}
    for storage in STORAGES:  # separate caches: each trains its own proxies
        cfg = _config(tmp_path / storage, root, f"dataset.storage={storage}", "cmi.weight=10")
        result = distill(cfg, tmp_path / f"run-{storage}")
        runs[storage] = result, SyntheticSet.load(tmp_path / f"run-{storage}" / "synthetic.pt")
    decoded = [p for p in (tmp_path / "disk" / "data" / "decoded").iterdir() if p.is_dir()]
    assert len(decoded) == 1 and (decoded[0] / "index.json").is_file()
    assert not (tmp_path / "memory" / "data" / "decoded").exists()
    assert not (tmp_path / "stream" / "data" / "decoded").exists()
    memory, memory_set = runs["memory"]
    for other, other_set in (runs["disk"], runs["stream"]):
        assert torch.equal(memory_set.images, other_set.images)
        assert memory["accuracy"] == other["accuracy"] and memory["cmi"] == other["cmi"]


def test_auto_chooses_by_the_budgets_and_says_so(tmp_path, caplog):
    from cmidd.tasks import load_real

    root = tinyimagenet_tree(tmp_path / "tiny")
    budgets = [[], ["dataset.memory_budget_gb=0.0001"]]
    budgets.append([*budgets[1], "dataset.disk_budget_gb=0.00001"])
    with caplog.at_level("INFO"):
        small, large, huge = (load_real(_config(tmp_path, root, *b), "cpu") for b in budgets)
    assert isinstance(small.train[0], torch.Tensor) and small.train_all is None
    assert isinstance(large.train[0], DiskImages) and len(large.train_all) == 18
    assert isinstance(huge.train[0], StreamImages) and len(huge.train_all) == 18
    chosen = [r.getMessage() for r in caplog.records if "storage" in r.getMessage()]
    for said, storage in zip(chosen, STORAGES, strict=True):
        assert f"storage {storage} (auto)" in said, said
    for other in (large, huge):
        assert torch.equal(small.train[1], other.train[1][0:6])
        assert torch.equal(small.test_images, other.test_images[0:6])
        assert torch.equal(small.test_labels, other.test_labels)
        draws = [real.sample_mixed(7, torch.Generator().manual_seed(0)) for real in (small, other)]
        assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
        assert torch.equal(small.train_tensors()[0], other.train_tensors()[0][0:18])


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
    assert "dataset.storage=stream" in app_error("dataset.storage=stream")[1]
    root = tinyimagenet_tree(tmp_path / "tiny")
    tiny = ["dataset=tinyimagenet", f"dataset.loader.root={root}", *SMALL]
    for storage in ("disk", "stream"):
        code, last = app_error(*tiny, f"dataset.storage={storage}", "zca.enabled=true")
        assert code == 2 and "zca.enabled=true" in last and "dataset.storage=memory" in last, last


def test_stream_without_statistics_and_disk_without_room_are_one_line(app_error, tmp_path):
    root = tinyimagenet_tree(tmp_path / "tiny")
    tiny = ["dataset=tinyimagenet", f"dataset.loader.root={root}", *SMALL]
    code, last = app_error(*tiny, "dataset.storage=stream", "dataset.loader.mean=null")
    assert code == 2 and last.startswith("error: dataset.storage=stream: ") and ".mean" in last
    code, last = app_error(*tiny, "dataset.storage=disk", "dataset.disk_budget_gb=0.00001")
    assert code == 2 and last.startswith("error: dataset.storage=disk: "), last
    assert "dataset.storage=stream" in last


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_ARCHIVE.is_file(), reason="no CIFAR-10 copy")
def test_the_cifar10_copy_gives_the_same_dm_run_in_memory_on_disk_and_streamed(tmp_path):
    from cmidd.synthetic import SyntheticSet
    from cmidd.tasks import distill

    sets = []
    for storage in STORAGES:
        cfg = compose_config(
            [*TINY, "dataset=cifar10_jpg", "cmi.weight=1", f"dataset.storage={storage}"],
            cache_dir=tmp_path / "cache",
        )
        distill(cfg, tmp_path / storage)
        sets.append(SyntheticSet.load(tmp_path / storage / "synthetic.pt").images)
    assert torch.equal(sets[0], sets[1]) and torch.equal(sets[0], sets[2])


@pytest.mark.parametrize(
    "method",
    [
        ["method=herding"],  # features of the proxy over every image of a class
        ["method=forgetting", "method.algorithm.epochs=2"],  # training on all images
    ],
    ids=["herding", "forgetting"],
)
def test_each_way_of_reading_real_data_gives_the_same_set_in_each_storage(method, tmp_path):
    from cmidd.synthetic import SyntheticSet
    from cmidd.tasks import distill

    root = tinyimagenet_tree(tmp_path / "tiny")
    sets = []
    for storage in STORAGES:
        overrides = [*BASE, "dataset=tinyimagenet", f"dataset.loader.root={root}", "ipc=2"]
        overrides += ["cmi.weight=1", f"dataset.storage={storage}", *method]
        cfg = compose_config(overrides, cache_dir=tmp_path / storage)
        assert distill(cfg, tmp_path / f"run-{storage}")["status"] == "finished"
        sets.append(SyntheticSet.load(tmp_path / f"run-{storage}" / "synthetic.pt").images)
    assert torch.equal(sets[0], sets[1]) and torch.equal(sets[0], sets[2])
