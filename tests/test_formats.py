"""Sets in other codebases' formats: each file written as its reference code writes it, read into
the dataset's space, refused in one line when it does not fit, and written back out."""

import json

import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from PIL import Image

from cmidd.components import load_real
from cmidd.data.real import denormalize
from cmidd.errors import UserError
from cmidd.formats import (
    AutoFormat,
    ImageFolderSet,
    MultiFormationFile,
    TrajectoryFiles,
    VicoFile,
)
from cmidd.runtime import generator

REF = {"mean": [0.5], "std": [0.25]}  # a normalization other than the dataset's


@pytest.fixture(scope="module")
def real():
    return load_real(compose_config(["logger=none", "device=cpu"]), torch.device("cpu"))


def sample(real, ipc=3):
    """Real training images in the dataset's space, ipc per class, and their labels."""
    images = [real.sample(c, ipc, generator(0, f"test/{c}")) for c in range(real.num_classes)]
    return torch.cat(images), torch.arange(real.num_classes).repeat_interleave(ipc)


def as_reference(real, images, mean=REF["mean"], std=REF["std"]):
    """The images as a reference code that normalizes with ``mean`` and ``std`` holds them."""
    pixels = denormalize(images, real.mean, real.std)
    return (pixels - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def test_a_dc_dsa_dm_result_file_reads_into_the_dataset_space(real, tmp_path):
    images, labels = sample(real)
    other = torch.roll(images, 1, 0)
    # main_DM.py: data_save.append([image_syn, label_syn]); torch.save({'data', 'accs_all_exps'})
    path = tmp_path / "res_DM_CIFAR10_ConvNet_3ipc.pt"
    state = {"data": [[as_reference(real, other), labels], [as_reference(real, images), labels]]}
    accuracies = [np.float64(0.5), np.float64(0.6)]  # evaluate_synset's numpy floats
    torch.save(state | {"accs_all_exps": {"ConvNet": accuracies}}, path)
    synthetic = VicoFile(experiment=1, **REF).read(path, real)
    assert torch.allclose(synthetic.images, images, atol=1e-5)
    assert torch.equal(synthetic.labels, labels) and synthetic.meta["format"] == "vico"
    with pytest.raises(UserError, match=r"format.file.experiment=2 is invalid.*2 experiments"):
        VicoFile(experiment=2, **REF).read(path, real)
    with pytest.raises(UserError, match=r"format.file.mean=None.*does not say"):
        VicoFile().read(path, real)  # digits: no entry in the reference's table


@pytest.mark.parametrize("fmt", ["vico", "mtt", "idc"])
def test_a_foreign_file_evaluates_as_the_same_set_saved_by_cmidd(tiny, tmp_path, real, fmt):
    """Each file in its reference's space (another normalization; IDC's pixels) trains the
    same networks to the same accuracy as the set saved by cmidd, up to one test image per
    network (float rounding of the conversion)."""
    from cmidd.synthetic import SyntheticSet
    from cmidd.tasks import evaluate

    images, labels = sample(real, ipc=2)
    factor = 2 if fmt == "idc" else 1
    ours = SyntheticSet(images, labels, real.mean, real.std, factor=factor)
    ours.save(tmp_path / "synthetic.pt", iteration=0, dataset=real.meta)
    stats = [f"format.file.mean={REF['mean']}", f"format.file.std={REF['std']}"]
    if fmt == "vico":
        torch.save({"data": [[as_reference(real, images), labels]]}, tmp_path / "res.pt")
        theirs, extra = tmp_path / "res.pt", stats
    elif fmt == "mtt":
        torch.save(as_reference(real, images), tmp_path / "images_best.pt")
        torch.save(labels, tmp_path / "labels_best.pt")
        theirs, extra = tmp_path, ["format.file.zca=false", *stats]
    else:
        torch.save([denormalize(images, real.mean, real.std), labels], tmp_path / "data.pt")
        theirs, extra = tmp_path / "data.pt", ["format.file.factor=2"]
    accuracy = [
        evaluate(tiny("task=evaluate", f"synthetic={path}", *options), tmp_path / name)["accuracy"]
        for name, path, options in (
            ("a", tmp_path / "synthetic.pt", []),
            ("b", theirs, [f"format={fmt}", *extra]),
        )
    ]
    runs = [a["convnet"]["runs"] for a in accuracy]
    assert runs[0] == pytest.approx(runs[1], abs=1.5 / len(real.test_labels))


def test_each_format_takes_the_reference_codes_normalization_for_the_dataset():
    resolved = {}
    for name in ("vico", "mtt"):
        cfg = compose_config([f"format={name}", "dataset=cifar100", "logger=none"])
        resolved[name] = list(cfg.format.file.std)
    assert resolved["vico"] == [0.2673, 0.2564, 0.2762]  # utils.get_dataset's CIFAR-100
    assert resolved["mtt"] == [0.2023, 0.1994, 0.2010]  # MTT's: CIFAR-10's for CIFAR-100


def test_mtt_and_datm_folders(real, tmp_path):
    images, labels = sample(real)
    mtt, datm = tmp_path / "mtt", tmp_path / "datm"
    for folder in (mtt, datm):
        folder.mkdir()
        torch.save(as_reference(real, images), folder / "images_best.pt")
    torch.save(labels, mtt / "labels_best.pt")  # distill.py: label_syn, long
    logits = torch.randn(len(labels), real.num_classes, generator=generator(0, "logits"))
    torch.save(logits, datm / "labels_best.pt")  # DATM: learned soft labels
    torch.save(torch.tensor(0.0123), datm / "lr_best.pt")
    plain = TrajectoryFiles(zca=False, **REF).read(mtt, real)
    assert torch.allclose(plain.images, images, atol=1e-5) and plain.learned_lr is None
    assert plain.targets is None and torch.equal(plain.labels, labels)
    soft = TrajectoryFiles(zca=False, **REF).read(datm / "images_best.pt", real)
    assert torch.allclose(soft.targets, logits.softmax(1))
    assert torch.equal(soft.labels, labels)  # by place: DATM's ipc per class, class by class
    assert soft.learned_lr == pytest.approx(0.0123)
    with pytest.raises(UserError, match=r"format.file.zca=null: say whether"):
        TrajectoryFiles(**REF).read(mtt, real)
    with pytest.raises(UserError, match=r"format.file.zca=true.*add zca.enabled=true"):
        TrajectoryFiles(zca=True).read(mtt, real)


def idc_decode_zoom(img, target, factor):
    """IDC's decode_zoom (condense.py) for an image size its factor divides, as a reference."""
    s = img.shape[-1] // factor
    spans = [slice(i * s, (i + 1) * s) for i in range(factor)]
    crops = [img[:, :, rows, cols] for rows in spans for cols in spans]
    up = torch.nn.Upsample(size=img.shape[-2:], mode="bilinear")
    return up(torch.cat(crops)), torch.cat([target] * factor**2)


def test_an_idc_data_file_decodes_as_idc_does(real, tmp_path):
    images, labels = sample(real, ipc=2)
    pixels = denormalize(images, real.mean, real.std)  # IDC's sets live in [0, 1]
    torch.save([pixels, labels], tmp_path / "data.pt")  # condense.py: [data, target]
    synthetic = MultiFormationFile(factor=2).read(tmp_path / "data.pt", real)
    ours, our_labels = synthetic.decoded()
    theirs, their_labels = idc_decode_zoom(images, labels, 2)
    assert len(ours) == 4 * len(images)
    key = lambda x: sorted(x.flatten(1).sum(1).tolist())  # noqa: E731 -- same images, any order
    assert key(ours.detach()) == pytest.approx(key(theirs), abs=1e-4)
    assert sorted(our_labels.tolist()) == sorted(their_labels.tolist())
    with pytest.raises(UserError, match=r"format.file.factor=null: say how many"):
        MultiFormationFile().read(tmp_path / "data.pt", real)
    with pytest.raises(UserError, match=r"format.file.factor=3 does not divide the image size 8"):
        MultiFormationFile(factor=3).read(tmp_path / "data.pt", real)


def write_folder(real, root, images, labels, classes=None):
    pixels = (denormalize(images, real.mean, real.std).clamp(0, 1) * 255).round().to(torch.uint8)
    for i, (image, label) in enumerate(zip(pixels, labels.tolist(), strict=True)):
        if classes is None or label < classes:
            (root / f"new{label:03d}").mkdir(parents=True, exist_ok=True)  # SRe2L's layout
            file = root / f"new{label:03d}" / f"class{label:03d}_id{i:03d}.png"
            Image.fromarray(image[0].numpy()).save(file)  # uint8 [H, W]: grayscale
    return pixels


def test_an_image_folder_per_class(real, tmp_path):
    images, labels = sample(real)
    pixels = write_folder(real, tmp_path / "sre2l", images, labels)
    synthetic = ImageFolderSet().read(tmp_path / "sre2l", real)
    expected = (pixels.float() / 255 - real.mean[0]) / real.std[0]
    assert torch.allclose(synthetic.images, expected, atol=1e-5)
    assert torch.equal(synthetic.labels, labels)
    write_folder(real, tmp_path / "nine", images, labels, classes=9)
    with pytest.raises(UserError, match=r"has 9 class folders; dataset=digits has 10 classes"):
        ImageFolderSet().read(tmp_path / "nine", real)


def test_a_wrong_normalization_or_class_count_is_refused(real, tmp_path):
    images, labels = sample(real)
    pixels = denormalize(images, real.mean, real.std)  # [0, 1], saved as if normalized
    torch.save({"data": [[pixels, labels]]}, tmp_path / "res.pt")
    with pytest.raises(UserError, match=r"res.pt does not look normalized as declared"):
        VicoFile(mean=list(real.mean), std=list(real.std)).read(tmp_path / "res.pt", real)
    torch.save({"data": [[as_reference(real, 4 * images), labels]]}, tmp_path / "wide.pt")
    assert VicoFile(**REF).read(tmp_path / "wide.pt", real)  # MTT-like spread is no sign
    torch.save({"data": [[as_reference(real, images), labels + 1]]}, tmp_path / "more.pt")
    with pytest.raises(UserError, match=r"labels from 1 to 10; dataset=digits has 10 classes"):
        VicoFile(**REF).read(tmp_path / "more.pt", real)


def test_refusals_are_one_line_from_the_launcher(app_error, tmp_path, real):
    images, labels = sample(real)
    (tmp_path / "mtt").mkdir()
    torch.save(images, tmp_path / "mtt" / "images_best.pt")
    torch.save(labels, tmp_path / "mtt" / "labels_best.pt")
    status, line = app_error("task=evaluate", f"synthetic={tmp_path / 'mtt'}", "format=mtt")
    assert status == 2 and line.startswith("error: format.file.zca=null: say whether")
    status, line = app_error("task=evaluate", f"synthetic={tmp_path / 'mtt'}")
    assert status == 2 and "looks like MTT/DATM's images_best.pt: pass format=mtt" in line


def test_auto_reads_cmidd_sets_and_image_folders(tiny, tmp_path, real):
    from cmidd.tasks import distill

    distill(tiny(), tmp_path / "run")
    assert AutoFormat.detect(tmp_path / "run" / "synthetic.pt") == "cmidd"
    images, labels = sample(real)
    write_folder(real, tmp_path / "folder", images, labels)
    assert AutoFormat.detect(tmp_path / "folder") == "image_folder"
    torch.save({"data": [[images, labels]]}, tmp_path / "res.pt")
    with pytest.raises(UserError, match=r"DC/DSA/DM result file.*pass format=vico"):
        AutoFormat.detect(tmp_path / "res.pt")


def test_export_and_import_round_trip(tiny, tmp_path):
    """cmidd's set written as MTT's files reads back identical, and measures identically; as
    image files, to 8 bits (soft labels kept)."""
    from cmidd.measure import measure
    from cmidd.synthetic import SyntheticSet
    from cmidd.tasks import distill, export

    distill(tiny(), tmp_path / "run")
    original = tmp_path / "run" / "synthetic.pt"
    export(tiny("task=export", f"synthetic={original}", "export=mtt"), tmp_path / "out")
    saved = SyntheticSet.load(original)
    stats = [f"format.file.mean={list(saved.mean)}", f"format.file.std={list(saved.std)}"]
    as_mtt = ["format=mtt", "format.file.zca=false", *stats]
    measured = [
        measure(tiny("task=measure", f"sets=[{path}]", *extra), tmp_path / name)["rows"][0]
        for name, path, extra in (("a", original, []), ("b", tmp_path / "out" / "mtt", as_mtt))
    ]
    assert measured[0]["accuracy"] == measured[1]["accuracy"]
    assert measured[0]["cmi"] == measured[1]["cmi"] and measured[0]["cmi"]["feature"] is not None
    real = load_real(tiny(), torch.device("cpu"))
    back = TrajectoryFiles(zca=False, mean=list(saved.mean), std=list(saved.std)).read(
        tmp_path / "out" / "mtt", real
    )
    assert torch.equal(back.images, saved.images) and torch.equal(back.labels, saved.labels)

    targets = torch.softmax(torch.randn(len(saved.labels), 10, generator=generator(0, "t")), 1)
    soft = SyntheticSet(saved.images, saved.labels, saved.mean, saved.std, targets=targets)
    ImageFolderSet().write(soft, tmp_path / "folder")
    again = ImageFolderSet().read(tmp_path / "folder", real)
    inside = denormalize(saved.images, saved.mean, saved.std).clamp(0, 1)
    assert (again.denormalized() - inside).abs().max() <= 0.5 / 255 + 1e-6  # half an 8-bit level
    assert torch.allclose(again.targets, targets)


def test_measure_reports_accuracy_cmi_and_standing_against_random(tiny, tmp_path):
    from cmidd.tasks import distill

    distill(tiny("cmi=none"), tmp_path / "base")
    distill(tiny("cmi.weight=1000"), tmp_path / "cmi")
    whole = tmp_path / "whole.json"
    whole.write_text(json.dumps({"accuracy": {"convnet": {"mean": 0.9, "std": 0.0}}}))
    sets = f"sets=[{tmp_path / 'base' / 'synthetic.pt'},{tmp_path / 'cmi' / 'synthetic.pt'}]"
    cfg = tiny("task=measure", sets, f"task.whole={whole}")
    rows = instantiate(cfg.task)(cfg, tmp_path / "m")["rows"]
    assert [r["path"] is None for r in rows] == [False, False, True]  # the random row last
    random = rows[2]["test"]
    for row in rows[:2]:
        assert row["ior"] == pytest.approx(row["test"] - random)
        assert row["hlr"] == pytest.approx(0.9 - row["test"])
        assert set(row["cmi"]) == {"feature", "probability"}
    assert rows[1]["cmi"]["feature"] < rows[0]["cmi"]["feature"]  # the term lowered it
    report = (tmp_path / "m" / "report.md").read_text()
    assert report.count("\n") == 5 and "random real, IPC 10" in report
    cfg = tiny("task=measure", sets, "task.accuracy=false")
    only = instantiate(cfg.task)(cfg, tmp_path / "cmi")["rows"]  # nothing trained, same CMI
    assert [r["cmi"] for r in only] == [r["cmi"] for r in rows]
    assert all(r["test"] is None for r in only)


def test_whitened_data_read_and_write_through_the_whitening(tiny, tmp_path):
    """A normalized file read into whitened data is whitened from its pixels; a whitened
    cmidd set exported as images is shown through the inverse whitening, and a format
    without ZCA refuses it."""
    from cmidd.synthetic import SyntheticSet
    from cmidd.tasks import export

    real = load_real(tiny("zca.enabled=true"), torch.device("cpu"))
    plain = load_real(tiny(), torch.device("cpu"))
    images, labels = sample(plain)
    pixels = denormalize(images, plain.mean, plain.std)
    torch.save({"data": [[as_reference(plain, images), labels]]}, tmp_path / "res.pt")
    read = VicoFile(**REF).read(tmp_path / "res.pt", real)
    assert torch.allclose(read.images, real.whitening(pixels), atol=1e-4)

    whitened = SyntheticSet(real.whitening(pixels), labels, real.mean, real.std)
    whitened.save(tmp_path / "synthetic.pt", iteration=0, dataset=real.meta)
    common = ["task=export", f"synthetic={tmp_path / 'synthetic.pt'}", "zca.enabled=true"]
    export(tiny(*common, "export=image_folder"), tmp_path / "out")
    back = ImageFolderSet().read(tmp_path / "out" / "image_folder", plain)
    assert (back.denormalized() - pixels.clamp(0, 1)).abs().max() < 1 / 255
    with pytest.raises(UserError, match=r"export=vico cannot hold the set's ZCA-whitened images"):
        export(tiny(*common, "export=vico"), tmp_path / "out2")
