"""DM with and without CMI through the real config, and the launcher end to end."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY

from cmidd.pretrained import ProxyPool
from cmidd.synthetic import SyntheticSet
from cmidd.tasks import distill


def run(tiny, out_dir, *overrides):
    out_dir.mkdir(parents=True, exist_ok=True)
    return distill(tiny(*overrides), out_dir), SyntheticSet.load(out_dir / "synthetic.pt")


def test_cmi_weight_lowers_the_cmi_of_the_synthetic_set(tiny, tmp_path):
    base, base_set = run(tiny, tmp_path / "base", "cmi.weight=0", "iterations=10")
    reg, reg_set = run(tiny, tmp_path / "cmi", "cmi.weight=1e5", "iterations=10")
    assert base["cmi"]["start"] == pytest.approx(reg["cmi"]["start"])  # same init, same proxy
    # The CMI the term minimizes: under the optimized pool (tiny 1-epoch proxies of width 8 say
    # little about another one's, which cmi.end measures).
    assert reg["cmi"]["end_in_pool"] < 0.8 * base["cmi"]["end_in_pool"]
    assert not torch.equal(base_set.images, reg_set.images)


def test_dm_updates_the_images_but_not_the_labels(tiny, tmp_path):
    cfg = tiny()
    from cmidd.runtime import generator
    from cmidd.tasks import load_real

    init = SyntheticSet.from_real(load_real(cfg, "cpu"), cfg.ipc, generator(cfg.seed, "init"))
    _, final = run(tiny, tmp_path)
    assert final.images.shape == init.images.shape == (100, 1, 8, 8)
    assert torch.equal(final.labels, init.labels) and not torch.equal(final.images, init.images)


def test_weight_zero_never_runs_the_proxy_in_the_loop(tiny, tmp_path, monkeypatch):
    def refuse(self, generator):
        raise AssertionError("a proxy was drawn although cmi.weight is 0")

    monkeypatch.setattr(ProxyPool, "sample", refuse)
    results, _ = run(tiny, tmp_path, "cmi=none")
    assert results["cmi"]["start"] > 0 and results["cmi"]["end"] > 0  # still measured


def test_results_follow_the_schema(tiny, tmp_path):
    results, _ = run(tiny, tmp_path, "eval.every=2", "eval.models=2")
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["status"] == "finished"
    acc = on_disk["accuracy"]["convnet"]
    assert len(acc["runs"]) == 2 and 0 <= acc["mean"] <= 1 and acc["std"] >= 0
    assert [p["iteration"] for p in on_disk["accuracy_curve"]] == [0, 2, 3]
    assert on_disk["accuracy_curve"][-1]["convnet"] == acc["mean"]
    assert on_disk["iterations"] == 3 and on_disk["seconds_per_iteration"] > 0
    assert on_disk["config"]["cmi"]["weight"] == 1000 and on_disk["config"]["ipc"] == 10


def test_same_seed_gives_a_bit_identical_set_and_another_seed_does_not(tiny, tmp_path):
    _, first = run(tiny, tmp_path / "a")
    _, second = run(tiny, tmp_path / "b")
    _, other = run(tiny, tmp_path / "c", "seed=1")
    assert torch.equal(first.images, second.images)
    assert not torch.equal(first.images, other.images)


def test_cmi_at_ipc_one_warns_that_it_is_zero(tiny, tmp_path):
    with pytest.warns(UserWarning, match="identically 0"):
        results, _ = run(tiny, tmp_path, "ipc=1", "cmi.weight=10")
    assert results["cmi"]["start"] == pytest.approx(0.0, abs=1e-7)


def test_a_failure_keeps_what_was_computed(tiny, tmp_path, monkeypatch):
    from cmidd.methods import DM

    def explode(self, synthetic, iteration):
        if iteration == 2:
            raise RuntimeError("boom")
        yield from original(self, synthetic, iteration)

    original = DM.losses
    monkeypatch.setattr(DM, "losses", explode)
    with pytest.raises(RuntimeError, match="boom"):
        run(tiny, tmp_path, "eval.every=1")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"].startswith("failed: RuntimeError: boom")
    assert [p["iteration"] for p in results["accuracy_curve"]] == [0, 1, 2]
    assert (tmp_path / "synthetic.pt").exists()


def test_launch_py_end_to_end(tmp_path, cache):
    out = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "launch.py", *TINY, f"cache_dir={cache}", f"hydra.run.dir={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"results.json", "synthetic.pt", "synthetic.png"} <= {p.name for p in out.iterdir()}
    saved = torch.load(out / "synthetic.pt", weights_only=True)
    assert saved["images"].shape == (100, 1, 8, 8) and saved["images"].dtype == torch.float32
    assert saved["labels"].tolist() == sorted(saved["labels"].tolist())
    assert len(saved["mean"]) == len(saved["std"]) == 1
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {
        "accuracy",
        "accuracy_curve",
        "cmi",
        "iterations",
        "seconds_per_iteration",
        "config",
    }
    assert not (ROOT / "wandb").exists()


@pytest.mark.parametrize("term", ["distillation", "CMI"])
def test_a_non_finite_loss_stops_the_run_naming_iteration_and_term(
    tiny, tmp_path, monkeypatch, term
):
    from cmidd.cmi import CMITerm
    from cmidd.errors import NonFiniteError
    from cmidd.methods import DM

    original_losses, original_cmi = DM.losses, CMITerm.__call__

    def nan_loss(self, synthetic, iteration):
        for loss in original_losses(self, synthetic, iteration):
            yield loss * float("nan") if iteration == 1 else loss

    def nan_cmi(self, images, labels, proxy=None, **kwargs):
        value = original_cmi(self, images, labels, proxy)
        return value * float("inf") if self.calls_made() == 2 else value

    if term == "distillation":
        monkeypatch.setattr(DM, "losses", nan_loss)
    else:
        calls = []
        monkeypatch.setattr(
            CMITerm, "calls_made", lambda self: calls.append(1) or len(calls), raising=False
        )
        monkeypatch.setattr(CMITerm, "__call__", nan_cmi)
    # The second iteration fails; the set after the first is kept and says so.
    with pytest.raises(NonFiniteError, match=f"iteration 2: the {term}.*after 1 iterations"):
        run(tiny, tmp_path, "cmi.weight=10")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"].startswith(f"failed: NonFiniteError: iteration 2: the {term}")
    assert SyntheticSet.load(tmp_path / "synthetic.pt").meta["iteration"] == 1


def test_cmi_none_stays_the_baseline_when_a_weight_is_given(tiny, tmp_path, monkeypatch):
    def refuse(self, generator):
        raise AssertionError("a proxy was drawn in the cmi=none baseline")

    monkeypatch.setattr(ProxyPool, "sample", refuse)
    results, _ = run(tiny, tmp_path, "cmi=none", "cmi.weight=100")
    assert results["config"]["cmi"]["weight"] == 0


def test_evaluating_along_the_way_does_not_change_the_distillation(tiny, tmp_path):
    _, quiet = run(tiny, tmp_path / "quiet", "eval.every=0")
    _, busy = run(tiny, tmp_path / "busy", "eval.every=1")
    assert torch.equal(quiet.images, busy.images)


def test_cmi_every_k_iterations_runs_the_proxy_on_those_iterations_only(
    tiny, tmp_path, monkeypatch
):
    sampled = []
    original = ProxyPool.sample
    monkeypatch.setattr(ProxyPool, "sample", lambda self, g: sampled.append(1) or original(self, g))
    run(tiny, tmp_path / "every", "iterations=7", "cmi.every=3", "cmi.weight=10")
    assert len(sampled) == 3  # iterations 0, 3 and 6


def test_fusing_the_classes_into_one_forward_leaves_the_set_unchanged(tiny, tmp_path):
    _, fused = run(tiny, tmp_path / "fused", "method.algorithm.fuse_classes=true")
    _, apart = run(tiny, tmp_path / "apart", "method.algorithm.fuse_classes=false")
    _, start = run(tiny, tmp_path / "start", "iterations=0")
    assert not torch.allclose(start.images, apart.images)
    assert torch.allclose(fused.images, apart.images, atol=1e-5)
