"""TinyImageNet and ImageNet presets on tiny fake trees in their official layouts: a few DM
iterations end to end, and a one-line error naming the path for each layout problem."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

WNIDS = ["n01443537", "n01629819", "n01641577"]


def _image(path, size, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def tinyimagenet_tree(root, per_class=6, val_per_class=2):
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    notes = []
    for c, wnid in enumerate(WNIDS):
        for i in range(per_class):
            _image(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", (64, 64), 100 * c + i)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(val_per_class):
            name = f"val_{c * val_per_class + i}.JPEG"
            _image(root / "val" / "images" / name, (64, 64), 1000 + 100 * c + i)
            notes.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(notes) + "\n")
    return root


def imagenet_tree(root, per_class=6, val_per_class=2):
    for c, wnid in enumerate(WNIDS):  # not square, so that the resize and the crop both act
        for i in range(per_class):
            _image(root / "train" / wnid / f"{wnid}_{i}.JPEG", (48, 40), 100 * c + i)
        for i in range(val_per_class):
            _image(root / "val" / wnid / f"ILSVRC2012_val_{c}{i}.JPEG", (40, 48), 1000 + c + i)
    return root


IMAGENET_32 = ["dataset.image_size=32", "dataset.resize=36", "dataset.convnet_depth=3"]
SMALL = ["ipc=2", "cmi.weight=1", "method.algorithm.batch_real=4"]


def test_tinyimagenet_loads_its_layout_and_distils(tiny, tmp_path):
    from cmidd.tasks import distill, load_real

    root = tinyimagenet_tree(tmp_path / "tiny")
    cfg = tiny("dataset=tinyimagenet", f"dataset.loader.root={root}", *SMALL)
    assert cfg.dataset.convnet_depth == 4
    real = load_real(cfg, "cpu")
    assert real.shape == (3, 64, 64) and real.class_names == WNIDS
    assert [len(x) for x in real.train] == [6, 6, 6] and real.test_labels.tolist() == [
        0, 0, 1, 1, 2, 2
    ]  # fmt: skip
    result = distill(cfg, tmp_path / "run")
    assert result["status"] == "finished" and result["iterations"] == 3
    assert json.loads((tmp_path / "run" / "results.json").read_text())["accuracy"]


def test_imagenet_resizes_crops_and_distils(tiny, tmp_path):
    from cmidd.tasks import distill, load_real

    root = imagenet_tree(tmp_path / "imagenet")
    cfg = tiny("dataset=imagenet", f"dataset.loader.root={root}", *IMAGENET_32, *SMALL)
    real = load_real(cfg, "cpu")
    assert real.shape == (3, 32, 32) and len(real.test_labels) == 6
    assert distill(cfg, tmp_path / "run")["status"] == "finished"


def test_imagenet_preset_is_the_standard_224_centre_crop(tiny):
    cfg = tiny("dataset=imagenet", "dataset.loader.root=/data/imagenet")
    sizes = [t.get("size") for t in cfg.dataset.loader.transform.transforms]
    assert sizes == [256, 224, None] and cfg.dataset.loader.mean == [0.485, 0.456, 0.406]


def _break_annotations(root):
    (root / "val" / "val_annotations.txt").unlink()
    return root / "val" / "val_annotations.txt"


def _empty_class(root):
    folder = root / "train" / WNIDS[1] / "images"
    shutil.rmtree(folder)
    folder.mkdir()
    return root / "train" / WNIDS[1]


def _unknown_val_class(root):
    notes = root / "val" / "val_annotations.txt"
    notes.write_text(notes.read_text().replace(WNIDS[2], "n09999999"))
    return notes


def _extra_train_class(root):
    _image(root / "train" / "n09999999" / "images" / "x.JPEG", (64, 64), 0)
    return root / "train"


@pytest.mark.parametrize(
    "damage", [_break_annotations, _empty_class, _unknown_val_class, _extra_train_class]
)
def test_each_tinyimagenet_layout_problem_is_one_line_naming_the_path(damage, app_error, tmp_path):
    root = tinyimagenet_tree(tmp_path / "tiny")
    path = damage(root)
    code, last = app_error("dataset=tinyimagenet", f"dataset.loader.root={root}", *SMALL)
    assert code == 2 and last.startswith("error: dataset.loader.root: ") and str(path) in last


def test_imagenet_splits_with_different_classes_are_one_line(app_error, tmp_path):
    root = imagenet_tree(tmp_path / "imagenet")
    shutil.rmtree(root / "val" / WNIDS[0])
    code, last = app_error("dataset=imagenet", f"dataset.loader.root={root}", *IMAGENET_32, *SMALL)
    assert code == 2 and str(root / "val") in last and WNIDS[0] in last, last


def test_data_over_the_memory_budget_is_refused_before_decoding(app_error, tmp_path, monkeypatch):
    import cmidd.data.loaders

    root = imagenet_tree(tmp_path / "imagenet")
    monkeypatch.setattr(cmidd.data.loaders, "_to_uint8", lambda *_: pytest.fail("decoded"))
    code, last = app_error(
        "dataset=imagenet",
        f"dataset.loader.root={root}",
        "dataset.memory_budget_gb=0.00001",
        "dataset.storage=memory",
        *SMALL,
    )
    # 24 images of 3 x 224 x 224 as float32: 0.01445 GB
    assert code == 2 and "dataset.memory_budget_gb=1e-05" in last and "0.0145 GB" in last, last
