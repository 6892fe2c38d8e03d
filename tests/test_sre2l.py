"""SRe2L (method=sre2l): the BatchNorm-statistics loss, recovery, FKD relabelling and the soft
labels task=evaluate trains on, and teachers read from torchvision-format files."""

import json
import pickle

import pytest
import torch
from conftest import compose_config
from torch import nn

from cmidd.crops import crop_box
from cmidd.errors import UserError
from cmidd.methods.sre2l import bn_statistics_loss
from cmidd.relabel import relabel

# SRe2L at tiny scale on digits: a ConvNet-8 teacher trained for 2 epochs on first use, 4
# recovery iterations, 2 epochs of soft labels and one student.
SRE2L = [
    "task=distill",
    "logger=none",
    "device=cpu",
    "method=sre2l",
    "iterations=4",
    "log_every=1",
    "ipc=2",
    "eval.models=1",
    "eval.epochs=2",
    "eval.nets.convnet_bn.width=8",  # the demo's student (conf/experiment/demo/sre2l.yaml)
    "net@teacher.net=convnet_bn",
    "teacher.net.width=8",
    "teacher.recipe.epochs=2",
    "teacher.build_if_missing=true",
    "proxy.net.width=8",
    "proxy.pool_size=2",
    "proxy.recipe.epochs=1",
    "method.algorithm.batch_size=4",  # 3 recovery batches per image index
]


@pytest.fixture
def stops(tmp_path, capsys):
    """stops(*overrides): the launcher's app at SRe2L's tiny scale, expected to stop; its exit
    status and last line on stderr."""
    from cmidd import app

    def run(*overrides):
        cfg = compose_config([*SRE2L, *overrides], cache_dir=tmp_path / "cache")
        with pytest.raises(SystemExit) as stop:
            app.run(cfg, tmp_path / "stopped")
        lines = capsys.readouterr().err.strip().splitlines()
        return stop.value.code, lines[-1] if lines else ""

    return run


def _classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5),
    ).eval()


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5)
    ).eval()


def test_the_bn_loss_is_zero_at_the_running_statistics_and_positive_elsewhere():
    net, x = _bn_net(), torch.randn(8, 3, 9, 9)
    with torch.no_grad():  # each layer's running statistics := its input's batch statistics
        h = x
        for layer in net:
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.copy_(h.mean(dim=(0, 2, 3)))
                layer.running_var.copy_(h.var(dim=(0, 2, 3), unbiased=False))
            h = layer(h)
    _, matched = bn_statistics_loss(net, x, first_multiplier=10.0)
    _, shifted = bn_statistics_loss(net, x + 0.5, first_multiplier=10.0)
    assert matched.item() == pytest.approx(0.0, abs=1e-5) and shifted.item() > 0.1
    _, once = bn_statistics_loss(net, x + 0.5, first_multiplier=1.0)
    assert shifted.item() > once.item()  # the first layer counts 10 times


def test_a_net_without_batchnorm_is_one_line():
    from cmidd.errors import UserError

    with pytest.raises(UserError, match="no BatchNorm2d"):
        bn_statistics_loss(nn.Conv2d(3, 3, 1), torch.zeros(1, 3, 2, 2), 1.0)


def test_crop_boxes_lie_inside_the_image_and_cover_the_scale():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = crop_box(32, 24, (0.08, 1.0), (3 / 4, 4 / 3), g)
        assert 0 <= top <= 32 - h and 0 <= left <= 24 - w and h * w >= 1


def test_recovery_lowers_the_teachers_cross_entropy(tmp_path):
    from cmidd.components import components

    cfg = compose_config([*SRE2L, "cmi.weight=0", "iterations=30"], cache_dir=tmp_path)
    parts = components(cfg)
    teacher, synthetic = parts.method.teacher, parts.synthetic

    def cross_entropy():
        with torch.no_grad():
            return nn.functional.cross_entropy(teacher(synthetic.images), synthetic.labels).item()

    before = cross_entropy()
    for iteration in range(30):
        for loss in parts.method.losses(synthetic, iteration):
            parts.optimizer.zero_grad()
            loss.backward()
            parts.optimizer.step()
        parts.scheduler.step()
    assert cross_entropy() < 0.9 * before, (before, cross_entropy())
    low = [(-m / s) for m, s in zip(synthetic.mean, synthetic.std, strict=True)]
    assert synthetic.images.min().item() >= min(low) - 1e-6  # clipped to the pixel range


def test_the_stored_views_replay_what_the_teacher_labelled():
    teacher, images = _classifier(), torch.randn(7, 3, 10, 10)
    soft = relabel(images, teacher, epochs=2, batch_size=3, generator=torch.Generator())
    assert soft.logits.shape == (2, 7, 5) and soft.logits.dtype == torch.float16
    for epoch in range(2):
        for views, logits in soft.views(images, epoch):
            assert torch.allclose(teacher(views).half().float(), logits.float(), atol=1e-2)
    assert sorted(soft.order[1].tolist()) == list(range(7)) and (soft.mix_perm >= 0).all()


def test_the_cifar_views_are_padded_crops_flips_and_mixup():
    """SRe2L's CIFAR relabel views (relabel_cifar.py): RandomCrop(32, padding=4) with black
    padding, a horizontal flip, then Mixup of the batch with a permutation of itself."""
    from torchvision.transforms import v2

    teacher, images = _classifier(), torch.rand(6, 3, 10, 10)
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    normalized = (images - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    black = (-mean / std).tolist()
    soft = relabel(
        normalized, teacher, epochs=3, batch_size=4, generator=torch.Generator().manual_seed(0),
        padding=4, mix="mixup", mix_alpha=0.8, fill=black,
    )  # fmt: skip
    assert soft.boxes[..., 2:].eq(1).all() and soft.mix_lams.shape == (3, 2)
    offsets = (soft.boxes[..., :2] * 10).round().long()
    assert offsets.min() == 0 and offsets.max() == 8  # [0, 2 x padding], both ends drawn
    assert ((soft.mix_lams > 0) & (soft.mix_lams < 1)).all()
    for epoch in range(3):
        order, batches = soft.order[epoch], list(soft.views(normalized, epoch))
        for b, (views, logits) in enumerate(batches):
            rows = range(4 * b, min(4 * b + 4, 6))
            plain = []
            for position in rows:  # the same view, made by torchvision on the raw pixels
                top, left = (round(v * 10) for v in soft.boxes[epoch, position, :2].tolist())
                assert 0 <= top <= 8 and 0 <= left <= 8
                padded = v2.Pad(4, fill=0)(images[order[position]])
                view = v2.functional.crop(padded, top, left, 10, 10)
                view = view.flip(2) if soft.flips[epoch, position] else view
                plain.append((view - mean.view(3, 1, 1)) / std.view(3, 1, 1))
            plain = torch.stack(plain)
            lam, partner = soft.mix_lams[epoch, b], soft.mix_perm[epoch, list(rows)]
            assert torch.allclose(views, lam * plain + (1 - lam) * plain[partner], atol=1e-5)
            assert torch.allclose(teacher(views).half().float(), logits.float(), atol=1e-2)
    again = relabel(
        normalized, teacher, epochs=3, batch_size=4, generator=torch.Generator().manual_seed(0),
        padding=4, mix="mixup", mix_alpha=0.8, fill=black,
    )  # fmt: skip
    assert torch.equal(again.mix_lams, soft.mix_lams)  # seeded: the same draws
    restored = type(soft).from_state(soft.state())
    assert torch.equal(next(restored.views(normalized, 1))[0], next(soft.views(normalized, 1))[0])


def test_a_relabel_recipe_outside_the_known_ones_is_one_line():
    with pytest.raises(UserError, match="method.algorithm.relabel.mix=mixin is invalid") as error:
        relabel(torch.rand(2, 3, 4, 4), _classifier(), 1, 2, torch.Generator(), mix="mixin")
    assert "\n" not in str(error.value)


def test_the_students_recipe_is_the_benchmarks():
    """CIFAR: SRe2L's small-dataset recipe; ImageNet: FKD's; eval=kd without SRe2L: ImageNet's."""
    cifar = compose_config(["experiment=cpu_cifar10", "method=sre2l"])
    relabel_cfg = cifar.method.algorithm.relabel
    assert (relabel_cfg.padding, relabel_cfg.mix, relabel_cfg.mix_alpha) == (4, "mixup", 0.8)
    reference = compose_config(["method=sre2l", "dataset=cifar10"])
    settings = reference.method.settings.cifar10
    assert (settings.relabel_batch, settings.student_epochs) == (128, 400)
    # the CPU preset: 100 images in batches of 10 for 1,600 epochs, the reference's 16,000 steps
    steps = cifar.eval.epochs * (100 // relabel_cfg.batch_size)
    assert (cifar.eval.temperature, relabel_cfg.epochs, steps) == (30.0, cifar.eval.epochs, 16_000)
    assert cifar.eval.hard.epochs == 400
    imagenet = compose_config(["experiment=paper", "method=sre2l", "dataset=imagenet", "eval=kd"])
    relabel_cfg = imagenet.method.algorithm.relabel
    assert (imagenet.eval.epochs, imagenet.eval.temperature) == (300, 20.0)
    assert (relabel_cfg.padding, relabel_cfg.mix, relabel_cfg.mix_alpha) == (0, "cutmix", 1.0)
    other = compose_config(["method=dm", "eval=kd"])
    assert (other.eval.epochs, other.eval.temperature) == (300, 20.0)


# relabel(torch.rand(5, 3, 8, 8), _classifier(), 2, 3, torch.Generator().manual_seed(3)) at the
# commit before the CIFAR recipe: its orders and the second epoch's CutMix boxes.
ORDER, MIX_BOXES = [[1, 0, 3, 4, 2], [0, 1, 2, 4, 3]], [[0, 0, 2, 2], [3, 4, 7, 8]]


def test_the_imagenet_views_are_drawn_as_before_the_cifar_recipe():
    """The same generator gives the same ImageNet-recipe draws as before the CIFAR recipe existed
    (values recorded then), and a state saved then (no padding, no Mixup keys) replays them."""
    soft = relabel(torch.rand(5, 3, 8, 8), _classifier(), 2, 3, torch.Generator().manual_seed(3))
    assert soft.mix_lams is None and soft.padding == 0
    assert soft.order.tolist() == ORDER and soft.mix_boxes[1].tolist() == MIX_BOXES
    old = {k: v for k, v in soft.state().items() if k not in ("padding", "fill", "mix_lams")}
    again = type(soft).from_state(old)
    images = torch.rand(5, 3, 8, 8)
    assert torch.equal(next(again.views(images, 1))[0], next(soft.views(images, 1))[0])


@pytest.mark.parametrize("weight", [0, 10], ids=["sre2l", "sre2l+cmi"])
def test_three_stages_end_to_end_and_evaluate_uses_the_soft_labels(weight, tmp_path, stops):
    from cmidd.synthetic import SyntheticSet
    from cmidd.tasks import distill, evaluate

    cfg = compose_config([*SRE2L, f"cmi.weight={weight}"], cache_dir=tmp_path / "cache")
    result = distill(cfg, tmp_path / "run")
    assert result["status"] == "finished"
    assert list(result["accuracy"]) == ["convnet_bn", "hard/convnet_bn"]  # soft, and hard labels
    cmi = [p["cmi"] for p in result["loss_curve"]]
    assert (min(cmi) > 0) if weight else (max(cmi) == 0)
    saved = SyntheticSet.load(tmp_path / "run" / "synthetic.pt")
    soft = saved.relabel
    assert soft is not None and soft.logits.shape == (2, 20, 10) and soft.batch_size == 64
    again = compose_config(
        [*SRE2L, f"synthetic={tmp_path / 'run' / 'synthetic.pt'}", "task=evaluate"],
        cache_dir=tmp_path / "cache",
    )
    assert evaluate(again, tmp_path / "eval")["accuracy"] == result["accuracy"]
    plain = SyntheticSet(saved.images, saved.labels, saved.mean, saved.std)  # no soft labels
    plain.save(tmp_path / "plain.pt")
    code, last = stops("task=evaluate", f"synthetic={tmp_path / 'plain.pt'}")
    assert code == 2 and "eval=kd" in last and "soft labels" in last, last


def test_shards_of_ipc_indices_are_at_most_the_ipc(stops):
    code, last = stops("cmi.weight=0", "shard.count=3", "shard.index=1")
    assert code == 2
    assert "shard.count=3 is invalid: method=sre2l splits by ipc and the run has ipc=2" in last


def test_a_shard_of_one_ipc_index_warns_that_its_cmi_term_is_zero(tmp_path):
    from cmidd.components import components

    shard = ["cmi.weight=1", "shard.count=2", "shard.index=1"]
    cfg = compose_config([*SRE2L, *shard], cache_dir=tmp_path / "cache")
    with pytest.warns(UserWarning, match=r"in shard 1 \(one IPC index\).*identically 0"):
        parts = components(cfg)
    assert parts.synthetic.images.shape[0] == 10  # one image per class: index 1


def test_a_teacher_from_a_torchvision_format_file(tmp_path, stops):
    from cmidd.nets import ConvNet
    from cmidd.pretrained.teachers import KIND

    net = ConvNet(in_channels=1, num_classes=10, image_size=8, width=8, depth=3, norm="batch")
    wrapped = {"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}
    torch.save(wrapped, tmp_path / "teacher.pth")
    tiny = [*SRE2L, "cmi.weight=0", f"teacher.weights={tmp_path / 'teacher.pth'}"]
    cfg = compose_config(tiny, cache_dir=tmp_path / "cache")
    from cmidd.tasks import load_real

    real = load_real(cfg, "cpu")
    loaded = KIND.get(cfg, real, "cpu")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=True)
    )
    assert not (tmp_path / "cache" / "teachers").exists()  # nothing trained
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    code, last = stops("cmi.weight=0", f"teacher.weights={tmp_path / 'other.pth'}")
    assert code == 2 and "does not fit teacher.net" in last, last
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(_Evil(str(marker))))
    code, last = stops("cmi.weight=0", f"teacher.weights={tmp_path / 'evil.pth'}")
    assert code == 2 and "cannot be read" in last and not marker.exists(), last
    code, last = stops("cmi.weight=0", "teacher=resnet18_torchvision")  # published weights only
    assert code == 2 and "teacher.weights=" in last, last


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.path}",)


def test_task_teacher_trains_and_caches_one_teacher(tmp_path):
    from cmidd.tasks import build_pretrained

    cfg = compose_config([*SRE2L, "task=teacher"], cache_dir=tmp_path / "cache")
    summary = build_pretrained(cfg, tmp_path / "out", "teacher")
    assert summary["items"] == 1 and 0 <= summary["test_accuracy"][0] <= 1
    written = json.loads((tmp_path / "out" / "pretrained.json").read_text())
    assert "teachers" in written["directory"]


def test_proxy_teacher_is_a_pool_of_the_teacher_alone_measured_by_another_seeds(tmp_path):
    from cmidd import pretrained
    from cmidd.components import components

    overrides = [o for o in SRE2L if not o.startswith("proxy.")]  # the teacher's own, here
    cfg = compose_config(
        [*overrides, "proxy=teacher", "cmi.weight=1"], cache_dir=tmp_path / "cache"
    )
    parts = components(cfg)
    teacher = pretrained.get("teacher", cfg, parts.real, "cpu")
    (proxy,) = parts.cmi.pool.nets
    x = parts.real.test_images[:4]
    assert torch.equal(proxy.embed(x), teacher.embed(x))  # the teacher's penultimate features
    assert torch.equal(proxy(x), teacher(x))
    other = parts.cmi.measuring.first  # the teacher of proxy.measure.seed: another network
    assert not torch.equal(other.embed(x), teacher.embed(x))


def test_a_run_saved_before_the_relabel_recipes_resumes_only_under_its_own():
    from cmidd.checkpoint import differing_keys

    def relabel_cfg(**keys):
        return {"method": {"algorithm": {"relabel": {"epochs": 3, **keys}}}}

    new = relabel_cfg(padding=0, mix="cutmix", mix_alpha=1.0)
    assert differing_keys(relabel_cfg(cutmix=True), new) == []
    assert differing_keys(relabel_cfg(cutmix=False), {**new} | relabel_cfg(mix="none")) == []
    assert differing_keys(relabel_cfg(cutmix=False), new) == ["method.algorithm.relabel.mix"]
    cifar = relabel_cfg(padding=4, mix="mixup", mix_alpha=0.8)
    assert len(differing_keys(relabel_cfg(cutmix=True), cifar)) == 3
    # eval=kd's hard-label protocol came later: its keys are not a difference for such a run
    hard = {"eval": {"models": 1, "hard": {"models": 3}}}
    assert differing_keys({"eval": {"models": 1}}, hard) == []
    assert differing_keys({"eval": {"models": 1, "hard": {"models": 5}}}, hard) == [
        "eval.hard.models"
    ]
