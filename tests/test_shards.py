"""Distillation split into shards (cmidd/shards.py), of classes (DM) or of IPC indices (SRe2L):
the merged set is the unsplit run's, and a merge refuses a missing or failed shard without
writing a set."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY
from test_sre2l import SRE2L

from cmidd.cmi import empirical_cmi
from cmidd.components import load_real
from cmidd.errors import UserError
from cmidd.merge import merge_all
from cmidd.report.runs import read_sweep
from cmidd.synthetic import SyntheticSet

# DM with the CMI term at a fixed weight, its proxies built on first use.
RUN = [*TINY, "method=dm", "cmi.weight=10", "proxy.build_if_missing=true", "iterations=4"]


def _launch(*args, cwd=ROOT):
    done = subprocess.run(
        [sys.executable, "launch.py", *args], cwd=cwd, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The whole run and its 2-shard sweep (merged by the sweep), sharing one cache."""
    root = tmp_path_factory.mktemp("shards")
    cache = f"cache_dir={root / 'cache'}"
    _launch(*RUN, cache, f"hydra.run.dir={root / 'whole'}")
    _launch("sweep=shards", *RUN, cache, f"hydra.sweep.dir={root / 'sweep'}")
    return root


def test_two_shards_merge_to_the_unsplit_set(runs):
    whole = torch.load(runs / "whole" / "synthetic.pt", weights_only=True)
    merged = torch.load(runs / "sweep" / "merged" / "synthetic.pt", weights_only=True)
    assert torch.equal(whole["labels"], merged["labels"])
    # The same sums in the same order on the CPU: equal; on a GPU equal up to float order.
    torch.testing.assert_close(merged["images"], whole["images"], rtol=0, atol=1e-6)
    assert not torch.equal(whole["images"], _start(runs))  # the run moved the set
    a = json.loads((runs / "whole" / "results.json").read_text())
    b = json.loads((runs / "sweep" / "merged" / "results.json").read_text())
    assert b["accuracy"]["convnet"]["runs"] == a["accuracy"]["convnet"]["runs"]
    assert b["cmi"]["end"] == pytest.approx(a["cmi"]["end"], rel=1e-5)
    assert b["cmi"]["start"] == pytest.approx(a["cmi"]["start"], rel=1e-5)
    shards = [_results(p.parent) for p in (runs / "sweep").rglob("shard.pt")]
    assert sorted(r["shard"]["classes"] for r in shards) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert [p.parent.name for p in (runs / "sweep").rglob("synthetic.pt")] == ["merged"]
    # The report reads the merged run as the run, under the shards' overrides but their index.
    (run,) = read_sweep(runs / "sweep")
    assert run.path.name == "merged" and run.ok and run.seed == 0
    assert "method=dm" in run.key and "shard" not in run.key


def test_sre2l_split_by_ipc_index_merges_to_the_unsplit_set_and_labels(tmp_path):
    """Recovery in 2 shards of IPC indices ([0, 1] and [2]), relabelled at the merge: the whole
    run's images, soft labels and student accuracy."""
    run = [*SRE2L, "ipc=3", "cmi.weight=0", f"cache_dir={tmp_path / 'cache'}"]
    _launch(*run, f"hydra.run.dir={tmp_path / 'whole'}")
    _launch("sweep=shards", *run, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    shards = [_results(p.parent)["shard"] for p in (tmp_path / "sweep").rglob("shard.pt")]
    assert sorted(s["indices"] for s in shards) == [[0, 1], [2]]
    assert all(s["classes"] == list(range(10)) for s in shards)
    whole = torch.load(tmp_path / "whole" / "synthetic.pt", weights_only=True)
    merged = torch.load(tmp_path / "sweep" / "merged" / "synthetic.pt", weights_only=True)
    assert torch.equal(whole["labels"], merged["labels"])
    assert torch.equal(merged["images"], whole["images"])  # the same sums in the same order
    for key, value in whole["relabel"].items():  # the views and the teacher's logits on them
        assert torch.equal(torch.as_tensor(merged["relabel"][key]), torch.as_tensor(value)), key
    a, b = _results(tmp_path / "whole"), _results(tmp_path / "sweep" / "merged")
    assert b["accuracy"] == a["accuracy"]
    assert b["cmi"]["end"] == pytest.approx(a["cmi"]["end"], rel=1e-5)
    # A merge that does not evaluate (for torchrun's task=evaluate) still relabels.
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        merge_all(tmp_path / "sweep", tmp_path / "unevaluated", "cpu", evaluate=False)
    unevaluated = torch.load(tmp_path / "unevaluated" / "synthetic.pt", weights_only=True)
    assert torch.equal(unevaluated["relabel"]["logits"], whole["relabel"]["logits"])


def _results(folder):
    return json.loads((folder / "results.json").read_text())


def _start(runs):
    """The initial set of the runs (class by class from the init stream)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=RUN)
    from cmidd.runtime import generator

    return SyntheticSet.from_real(load_real(cfg, "cpu"), cfg.ipc, generator(0, "init")).images


def _copy(runs, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(runs / "sweep", sweep, ignore=shutil.ignore_patterns("merged"))
    return sweep, next(
        p.parent for p in sweep.rglob("shard.pt") if _results(p.parent)["shard"]["index"]
    )


def test_a_failed_shard_is_refused_at_merge(runs, tmp_path):
    sweep, second = _copy(runs, tmp_path)
    results = _results(second)
    results["status"] = "failed: the synthetic set became NaN"
    (second / "results.json").write_text(json.dumps(results))
    with pytest.raises(UserError, match=r"shard 1 of 2 .* did not finish \(failed"):
        merge_all(sweep, tmp_path / "merged", "cpu")
    assert not (tmp_path / "merged").exists()


def test_a_shard_run_again_elsewhere_merges_and_a_duplicate_is_refused(runs, tmp_path):
    from hydra import initialize_config_dir

    sweep, second = _copy(runs, tmp_path)
    results = _results(second)  # resumed, on another device: nothing the set depends on
    results["config"] |= {"resume": str(second), "device": "cuda", "log_every": 7}
    (second / "results.json").write_text(json.dumps(results))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        merged = merge_all(sweep, tmp_path / "merged", "cpu", evaluate=False)
    assert (tmp_path / "merged" / "synthetic.pt").is_file()
    assert next(iter(merged.values()))["status"] == "finished"
    shutil.copytree(second, sweep / "again")
    with pytest.raises(UserError, match="shard 1 of one run is in both"):
        merge_all(sweep, tmp_path / "merged2", "cpu")


def test_a_missing_shard_is_named_at_merge(runs, tmp_path):
    sweep, second = _copy(runs, tmp_path)
    shutil.rmtree(second)
    with pytest.raises(UserError, match=r"shard\(s\) \[1\] of 2 missing"):
        merge_all(sweep, tmp_path / "merged", "cpu")
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=dsa"], "method=dsa: its classes meet in a trained network"),
        (
            ["method=dm", "shard.count=11"],
            "shard.count=11 is invalid: method=dm splits by class and dataset=digits has 10",
        ),
        (["method=dm", "cmi.weight=auto"], "cmi.weight=auto"),
        (["method=dm", "shard.index=2"], "shard.index=2 is invalid: shards are 0 to 1"),
    ],
)
def test_shards_refuse_what_does_not_split(app_error, overrides, message):
    status, line = app_error("shard.count=2", *overrides)
    assert status == 2
    assert message in line


def test_a_class_starts_the_same_whichever_classes_a_set_holds(tiny):
    from cmidd.runtime import generator

    real = load_real(tiny(), "cpu")
    whole = SyntheticSet.from_real(real, 3, generator(0, "init"))
    part = SyntheticSet.from_real(real, 3, generator(0, "init"), classes=[4, 7])
    assert part.classes == [4, 7]
    for c in (4, 7):
        assert torch.equal(part.by_class(c), whole.by_class(c))


def test_the_cmi_of_shards_with_the_whole_size_adds_up_to_the_sets():
    outputs = torch.randn(12, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(4).repeat_interleave(3)
    low, high = labels < 2, labels >= 2
    parts = empirical_cmi(outputs[low], labels[low], total=12) + empirical_cmi(
        outputs[high], labels[high], total=12
    )
    torch.testing.assert_close(parts, empirical_cmi(outputs, labels))
