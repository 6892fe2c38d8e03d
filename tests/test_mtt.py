"""Trajectory matching (MTT): expert buffers, the unrolled student, the learned lr, ZCA, presets."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import BASE, ROOT, compose_config
from hydra.utils import instantiate

from cmidd import pretrained
from cmidd.components import components, load_real
from cmidd.errors import UserError
from cmidd.pretrained import StoreError
from cmidd.pretrained.experts import flat_parameters
from cmidd.runtime import build_seeded
from cmidd.synthetic import SyntheticSet
from cmidd.tasks import build_pretrained, distill, evaluate


def expert_files(cfg, real):
    directory = pretrained.location("expert", cfg, real)
    return sorted(directory.glob("expert_*.pt")), directory


def test_buffer_records_every_epoch_once_and_reloads_it(mtt, tmp_path):
    cfg = mtt("task=buffer")
    real = load_real(cfg, "cpu")
    summary = build_pretrained(cfg, tmp_path, "expert")
    files, directory = expert_files(cfg, real)
    assert len(files) == 2 and len(summary["test_accuracy"]) == 2
    trajectory = torch.load(files[0], weights_only=True)
    net = build_seeded(
        instantiate(cfg.expert.net),
        cfg.expert.seed,
        "expert/0",
        in_channels=1,
        num_classes=10,
        image_size=8,
    )
    assert trajectory.shape == (5, sum(p.numel() for p in net.parameters()))
    assert torch.equal(trajectory[0], flat_parameters(net))  # the initialization, then each epoch
    assert all(not torch.equal(a, b) for a, b in zip(trajectory[:-1], trajectory[1:], strict=True))
    meta = json.loads((directory / "expert_000.json").read_text())
    assert meta["epochs"] == 4 and meta["recipe"]["lr"] == 0.01 and "sha256" in meta
    mtimes = [f.stat().st_mtime_ns for f in files]
    loaded = pretrained.get("expert", cfg, real, "cpu")  # finds the experts, trains nothing
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert len(loaded) == 2 and loaded.epochs == 4
    start, target = loaded.segment(1, 2, 2, "cpu")
    assert torch.equal(start, torch.load(files[1], weights_only=True)[2])
    assert torch.equal(target, torch.load(files[1], weights_only=True)[4])


def test_a_missing_or_corrupt_buffer_names_the_command_that_builds_it(mtt, tmp_path):
    cfg = mtt("expert.build_if_missing=false")
    real = load_real(cfg, "cpu")
    with pytest.raises(StoreError, match=r"python launch.py task=buffer .*expert.count=2"):
        pretrained.get("expert", cfg, real, "cpu")
    build_pretrained(cfg, tmp_path, "expert")
    files, _ = expert_files(cfg, real)
    files[1].write_bytes(files[1].read_bytes()[:100])
    with pytest.raises(StoreError, match="corrupt.*task=buffer"):
        pretrained.get("expert", cfg, real, "cpu")
    build_pretrained(cfg, tmp_path, "expert")  # retrains the broken expert only
    assert len(pretrained.get("expert", cfg, real, "cpu")) == 2


def test_gradients_reach_the_images_and_the_learned_lr(mtt):
    parts = components(mtt("cmi=none"))
    loss = next(parts.method.losses(parts.synthetic, 0))
    loss.backward()
    assert loss.item() > 0
    assert parts.synthetic.images.grad.abs().sum() > 0
    assert torch.isfinite(parts.synthetic.lr.grad) and parts.synthetic.lr.grad != 0


def test_a_student_that_does_not_move_scores_exactly_one(mtt):
    # With lr 0 the student stays at the expert's start: the loss is the normalization itself.
    parts = components(mtt("cmi=none", "method.synthetic_lr.init=0.0"))
    assert next(parts.method.losses(parts.synthetic, 0)).item() == pytest.approx(1.0)


def test_distillation_with_and_without_cmi_learns_images_and_lr(mtt, tmp_path):
    base = distill(mtt("cmi=none", "iterations=3"), tmp_path / "base")
    with_cmi = distill(mtt("cmi.weight=1000", "iterations=3"), tmp_path / "cmi")
    start = SyntheticSet.from_real(load_real(mtt(), "cpu"), 10, torch.Generator(), lr=0.01)
    saved = {run: SyntheticSet.load(tmp_path / run / "synthetic.pt") for run in ("base", "cmi")}
    assert all(s.learned_lr not in (None, 0.01) for s in saved.values())
    assert not torch.allclose(saved["base"].images, saved["cmi"].images)
    assert saved["base"].images.shape == start.images.shape
    assert base["cmi"]["start"] == with_cmi["cmi"]["start"] > 0
    # The saved set carries its lr, and evaluating it again trains with that lr.
    again = evaluate(
        mtt("task=evaluate", f"synthetic={tmp_path / 'cmi' / 'synthetic.pt'}"), tmp_path / "eval"
    )
    assert again["accuracy"] == with_cmi["accuracy"]


def test_the_student_must_be_the_experts_net_and_the_buffer_long_enough(mtt):
    cfg = mtt("cmi=none")
    real = load_real(cfg, "cpu")
    trajectories = pretrained.get("expert", cfg, real, "cpu")
    wider = instantiate(cfg.method.algorithm, net={**cfg.expert.net, "width": 16})
    with pytest.raises(UserError, match="expert.net"):
        wider(real=real, seed=0, device="cpu").provide(expert=trajectories)
    with pytest.raises(UserError, match=r"max_start_epoch=4 .*needs experts trained for 5 epochs"):
        components(
            mtt(
                "cmi=none", "method.algorithm.max_start_epoch=4", "method.algorithm.expert_epochs=2"
            )
        )
    with pytest.raises(UserError, match=r"method.algorithm.net=.*differs from expert.net"):
        components(
            mtt(
                "cmi=none",
                "method.algorithm.net={_target_: cmidd.nets.ConvNet, "
                "_partial_: true, width: 16, depth: 3, norm: instance, pooling: avg}",
            )
        )


def test_zca_whitens_the_data_keeps_caches_apart_and_inverts_for_display(mtt, tmp_path):
    plain, whitened = (load_real(mtt(f"zca.enabled={z}"), "cpu") for z in ("false", "true"))
    assert whitened.meta["zca"] == 0.1 and "zca" not in plain.meta
    # ZCA maps the pixel covariance's eigenvalues l to l / (l + eps), eigenvectors kept.
    pixels = plain.train_tensors()[0] * plain.std[0] + plain.mean[0]
    eig = torch.linalg.eigvalsh(torch.cov(pixels.flatten(1).T.double()))
    white = torch.linalg.eigvalsh(torch.cov(whitened.train_tensors()[0].flatten(1).T.double()))
    assert torch.allclose(white, eig / (eig + 0.1), atol=2e-3)
    synthetic = SyntheticSet.from_real(whitened, 2, torch.Generator().manual_seed(0))
    pixels = synthetic.denormalized()  # shown through the inverse ZCA
    again = SyntheticSet.from_real(plain, 2, torch.Generator().manual_seed(0)).denormalized()
    assert torch.allclose(pixels, again, atol=1e-3)
    dirs = {
        pretrained.location("expert", mtt(f"zca.enabled={z}"), real)
        for z, real in (("false", plain), ("true", whitened))
    }
    assert len(dirs) == 2
    distill(mtt("cmi=none", "iterations=1", "zca.enabled=true"), tmp_path / "run")
    with pytest.raises(UserError, match="zca=0.1.*zca.enabled=true"):
        evaluate(
            mtt("task=evaluate", f"synthetic={tmp_path / 'run' / 'synthetic.pt'}"),
            tmp_path / "eval",
        )


@pytest.mark.parametrize(
    "data,ipc,expected",
    [
        ("cifar10", 1, (50, 2, 2, 100, 1e-7, 0.01, 10, True)),
        ("cifar10", 10, (30, 2, 20, 100, 1e-5, 0.001, 100, True)),  # DC-bench line 52; issue #31
        ("cifar10", 50, (30, 2, 40, 1000, 1e-5, 0.001, 500, False)),
        ("cifar100", 1, (20, 3, 20, 1000, 1e-5, 0.01, 100, True)),
        ("cifar100", 10, (20, 2, 20, 1000, 1e-5, 0.01, 1000, False)),
        ("cifar100", 50, (80, 2, 40, 1000, 1e-5, 0.01, 125, True)),
        ("tinyimagenet", 1, (10, 2, 10, 10000, 1e-4, 0.01, 200, False)),  # DC-bench lines 71-83
        ("tinyimagenet", 10, (20, 2, 40, 10000, 1e-4, 0.01, 200, False)),
        ("tinyimagenet", 50, (20, 2, 40, 10000, 1e-4, 0.01, 300, False)),
    ],
)
def test_paper_presets_compose_with_the_mtt_table(data, ipc, expected):
    root = ["dataset.loader.root=/data/tiny"] if data == "tinyimagenet" else []
    cfg = compose_config(["experiment=paper", "method=mtt", f"dataset={data}", f"ipc={ipc}", *root])
    a = cfg.method.algorithm
    assert (
        a.syn_steps,
        a.expert_epochs,
        a.max_start_epoch,
        cfg.method.optimizer.lr,
        cfg.method.synthetic_lr.lr,
        cfg.method.synthetic_lr.init,
        a.batch_syn,
        cfg.zca.enabled,
    ) == expected
    assert cfg.iterations == 5000 and cfg.expert.count == 100 and cfg.expert.recipe.epochs == 50
    assert a.net == cfg.expert.net and cfg.expert.net.width == 128


def test_cpu_preset_scales_experts_and_student_together():
    cfg = compose_config(["experiment=cpu_cifar10", "method=mtt"])
    assert cfg.cmi.weight == "auto"  # the preset sets none chosen on test accuracy
    assert cfg.method.algorithm.net.width == cfg.expert.net.width == 32
    assert (
        cfg.method.algorithm.max_start_epoch - 1 + cfg.method.algorithm.expert_epochs
        <= cfg.expert.recipe.epochs
    )
    assert cfg.iterations == 150 and cfg.zca.enabled and cfg.expert.build_if_missing


def test_a_dataset_without_mtt_settings_is_a_one_line_error(cache, tmp_path):
    # digits looked up as svhn: the data load, the table has no entry (svhn's data are not here)
    done = subprocess.run(
        [
            sys.executable,
            "launch.py",
            *BASE,
            "method=mtt",
            "dataset.benchmark=svhn",
            "cmi=none",
            f"cache_dir={cache}",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "method.settings has no entry for [svhn, 10, zca] (nothing under [svhn])" in done.stderr


def test_a_crash_then_resume_continues_images_lr_and_expert_draws(mtt, tmp_path, monkeypatch):
    from test_resume import crash_at

    from cmidd.methods import MTT as Method

    run = ["cmi.weight=1000", "iterations=4", "checkpoint.every=2"]
    distill(mtt(*run), tmp_path / "whole")
    restore = crash_at(monkeypatch, Method, 3)
    with pytest.raises(KeyboardInterrupt):
        distill(mtt(*run), tmp_path / "resumed")
    restore()
    distill(mtt(*run), tmp_path / "resumed")
    whole, resumed = (
        SyntheticSet.load(tmp_path / r / "synthetic.pt") for r in ("whole", "resumed")
    )
    assert torch.equal(whole.images, resumed.images) and whole.learned_lr == resumed.learned_lr


def test_the_printed_buffer_command_builds_the_buffer_the_run_needs(cache, tmp_path):
    # The demo preset's MTT experts differ from the expert group's defaults
    # (conf/experiment/demo/mtt.yaml):
    # the command must carry the method so that it composes the same experts.
    done = subprocess.run(
        [
            sys.executable,
            "launch.py",
            *BASE,
            "method=mtt",
            "cmi=none",
            "expert.build_if_missing=false",
            f"cache_dir={cache}",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    command = done.stderr.strip().splitlines()[-1].split("build it with: ")[1].split()
    assert command[:3] == ["python", "launch.py", "task=buffer"] and "method=mtt" in command
    run = compose_config([*BASE, "method=mtt", "cmi=none"], cache_dir=cache)
    built = compose_config(command[2:])
    real = load_real(run, "cpu")
    assert pretrained.location("expert", built, real) == pretrained.location("expert", run, real)


@pytest.mark.parametrize(
    "override,message",
    [
        ("method.algorithm.max_start_epoch=0", "method.algorithm.max_start_epoch=0 is invalid"),
        ("method.algorithm.batch_syn=0", "method.algorithm.batch_syn=0 is invalid"),
        ("expert.count=0", "expert.count=0 is invalid"),
        ("zca.eps=0", "zca.eps=0 is invalid"),
    ],
)
def test_bad_trajectory_matching_settings_are_named(mtt, override, message):
    with pytest.raises(UserError, match=message):
        components(mtt("cmi=none", override))
