"""Numbers a reviewer can trust: a validation split no training ever sees, selections made on
it, paired verdicts, DD-Ranking's scores, the whole-dataset row, a measuring pool disjoint from
the optimized one, and a manifest that tells runs of different code apart."""

import json

import pytest
import torch
from conftest import BASE, compose_config

from cmidd.data.real import RealData
from cmidd.report.ddranking import augmentation_robust, label_robust, scores
from cmidd.report.runs import Run, paired, paired_cell
from cmidd.report.tables import all_groups, table1
from cmidd.report.weight import weight
from cmidd.tasks import distill


def _rows(images: torch.Tensor) -> set:
    return {bytes(row.numpy().tobytes()) for row in images.reshape(len(images), -1)}


def test_no_training_use_of_the_data_ever_sees_a_validation_image(cache, tmp_path, monkeypatch):
    """Every way a method, a proxy, an expert, a teacher or a coreset reads training images
    goes through RealData's train split; record them all over runs that use each."""
    seen = []
    for name in ("sample", "sample_mixed", "train_tensors"):
        original = getattr(RealData, name)

        def recording(self, *args, original=original, **kwargs):
            out = original(self, *args, **kwargs)
            seen.append(out[0] if isinstance(out, tuple) else out)
            return out

        monkeypatch.setattr(RealData, name, recording)
    held = []
    for overrides in (
        ["method=dm"],  # proxies trained, real batches sampled
        ["method=idm", "cmi.weight=10"],  # pool nets trained on sample_mixed
        ["method=forgetting"],  # a coreset training its own net
        ["method=herding"],
    ):
        cfg = compose_config([*BASE, *overrides, "dataset.val.per_class=20"], cache_dir=cache)
        results = distill(cfg, tmp_path / overrides[0].split("=")[1])
        assert results["status"] == "finished"
        from cmidd.components import load_real

        held.append(load_real(cfg, "cpu"))
    val = _rows(held[0].val_images)
    assert len(val) == 200 and len(held[0].val_images) == 200  # 20 per class, all distinct
    assert all(torch.equal(r.val_images, held[0].val_images) for r in held)  # fixed per dataset
    assert seen and all(not (_rows(images.detach().cpu()) & val) for images in seen)
    train = torch.cat([x for x in held[0].train])
    assert not (_rows(train) & val) and len(train) + 200 == 1257


def test_the_split_is_the_same_for_every_seed_and_changes_the_caches(tiny):
    from cmidd.components import load_real

    a = load_real(tiny("dataset.val.per_class=10", "seed=0"), "cpu")
    b = load_real(tiny("dataset.val.per_class=10", "seed=7"), "cpu")
    none = load_real(tiny("dataset.val.per_class=0"), "cpu")
    assert torch.equal(a.val_images, b.val_images)
    assert a.meta["val"] == {"per_class": 10, "seed": 0} and "val" not in none.meta


def _run(tmp_path, key, seed, test, val=None, method="dm", weight=0.0, commit="abc"):
    accuracy = {"mean": test, "std": 0.0, "runs": [test]}
    if val is not None:
        accuracy["val"] = {"mean": val, "std": 0.0, "runs": [val]}
    results = {
        "accuracy": {"convnet": accuracy},
        "cmi": {"weight": weight},
        "config": {"method": {"name": method}, "dataset": {"name": "digits"}, "ipc": 10,
                   "cmi": {"weight": weight}},
        "manifest": {"commit": commit, "dirty": False},
    }  # fmt: skip
    return Run(tmp_path / f"{key}{weight}{seed}", key, seed, "finished", results)


def test_the_weight_study_chooses_on_validation_and_shows_test_beside_it(tmp_path):
    # On test, 300 is ahead; on validation, 1000: the choice is 1000.
    runs = [
        _run(tmp_path, "k", 0, test=0.40, val=0.41),
        _run(tmp_path, "k", 0, test=0.46, val=0.42, weight=300),
        _run(tmp_path, "k", 0, test=0.44, val=0.45, weight=1000),
    ]
    rows = {line.split("|")[1].strip(): line for line in weight(runs).splitlines()[2:]}
    assert rows["1000 (best on validation)"].endswith("| 45.00 ± 0.00 | 44.00 ± 0.00 |")
    assert "300" in rows and "best" not in rows["300"]
    no_split = [_run(tmp_path, "k", 0, test=0.4), _run(tmp_path, "k", 0, test=0.5, weight=1)]
    assert "best" not in weight(no_split)


def test_paired_differences_say_not_established_when_the_interval_holds_zero(tmp_path):
    base = [_run(tmp_path, "b", s, test=t) for s, t in enumerate([0.9198, 0.9327, 0.9290])]
    other = [_run(tmp_path, "c", s, test=t) for s, t in enumerate([0.9284, 0.9432, 0.9296])]
    result = paired(base, other)
    assert result["mean"] == pytest.approx(0.6567, abs=1e-3)
    assert (result["low"], result["high"]) == pytest.approx((-0.65, 1.96), abs=0.01)
    assert paired_cell(result) == "+0.66 [-0.65, +1.96], not established (3 seeds)"
    more = [*base, _run(tmp_path, "b", 3, test=0.9253), _run(tmp_path, "b", 4, test=0.9444)]
    plus = [*other, _run(tmp_path, "c", 3, test=0.9309), _run(tmp_path, "c", 4, test=0.9494)]
    assert paired_cell(paired(more, plus)) == "+0.61 [+0.14, +1.08], helps (5 seeds)"
    assert paired(more, plus[:1])["seeds"] == [0]  # only the seeds both finished


def test_dd_ranking_scores_follow_their_published_definitions():
    # HLR = full - syn, IOR = syn - random, LRS = (e^a - e^-1) / (e - e^-1), a = (IOR - HLR) / 2
    assert label_robust(0.60, 0.50, 0.40) == pytest.approx(
        {"hlr": 0.10, "ior": 0.10, "lrs": 0.268941}, abs=1e-6
    )
    assert label_robust(0.845, 0.65, 0.55)["lrs"] == pytest.approx(0.249205, abs=1e-6)
    assert label_robust(1.0, 0.0, 1.0)["lrs"] == pytest.approx(0.0)  # the worst: a = -1
    assert label_robust(0.0, 1.0, 0.0)["lrs"] == pytest.approx(1.0)  # the best: a = 1
    assert augmentation_robust(0.40, 0.30, 0.20, 0.25) == pytest.approx(0.279712, abs=1e-6)


def test_table1_has_the_whole_dataset_row_and_dd_ranking_scores(tmp_path):
    runs = []
    for seed in (0, 1):
        runs += [
            _run(tmp_path, "r", seed, 0.40, method="random"),
            _run(tmp_path, "w", seed, 0.60, method="whole_dataset"),
            _run(tmp_path, "d", seed, 0.50, method="dm"),
        ]
    report = table1(runs)
    rows = [line.split("|")[1].strip() for line in report.splitlines() if line.startswith("|")]
    assert rows[-1] == "Whole Dataset" or "Whole Dataset" in rows
    dm = next(line for line in report.splitlines() if line.startswith("| DM | digits"))
    assert "+10.00 ± 0.00 | +10.00 ± 0.00 | 0.2689 ± 0.0000 | 0, 1 |" in dm
    assert scores(runs[2::3], runs[0::3], runs[1::3])["seeds"] == [0, 1]
    # A soft-label set (eval=kd): IOR on its soft-label accuracy, HLR on its hard-label one.
    kd = _run(tmp_path, "s", 0, 0.55, method="sre2l")
    kd.results["accuracy"]["hard/convnet"] = {"mean": 0.45, "std": 0.0, "runs": [0.45]}
    found = scores([kd], runs[0:1], runs[1:2])
    assert found["ior"][0] == pytest.approx(15.0) and found["hlr"][0] == pytest.approx(15.0)


def test_the_report_tells_runs_of_different_commits_apart(tmp_path):
    from cmidd.report.runs import _apart_by_commit

    runs = _apart_by_commit(
        [_run(tmp_path, "k", 0, 0.5, commit="aaaa"), _run(tmp_path, "k", 1, 0.6, commit="bbbb")]
    )
    assert {r.key for r in runs} == {"k @aaaa", "k @bbbb"}
    assert all_groups(runs).count("| k @") == 2


def test_results_carry_a_manifest_and_the_set_cmi_of_a_disjoint_proxy(tiny, tmp_path):
    results = distill(tiny("dataset.val.per_class=10"), tmp_path)
    about = json.loads((tmp_path / "results.json").read_text())["manifest"]
    assert about["versions"]["torch"] == torch.__version__.split("+")[0]
    assert len(about["data_sha256"]) == 64 and about["device"].startswith("cpu")
    assert set(about["seconds"]) == {"setup", "distillation", "evaluation"}
    assert about["peak_memory"]["host_rss_mib"] > 0
    cmi = results["cmi"]
    assert cmi["end"] is not None and cmi["end_in_pool"] is not None
    assert cmi["end"] != cmi["end_in_pool"]  # another proxy than the pool's first
    assert "val" in results["accuracy"]["convnet"]


def test_the_measuring_proxy_is_none_of_the_pools(tiny):
    from cmidd.components import components

    parts = components(tiny("proxy.pool_size=3"))
    measuring = parts.cmi.measuring.first.state_dict()
    for net in parts.cmi.pool.nets:
        assert any(not torch.equal(a, b) for a, b in zip(
            net.state_dict().values(), measuring.values(), strict=True))  # fmt: skip


def test_the_whole_dataset_row_is_computed_once_and_cached(cache, tmp_path, caplog):
    caplog.set_level("INFO")
    cfg = [*BASE, "method=whole_dataset"]
    first = distill(compose_config(cfg, cache_dir=cache), tmp_path / "a")
    again = distill(compose_config(cfg, cache_dir=cache), tmp_path / "b")
    assert first["accuracy"] == again["accuracy"]
    assert any("cached" in r.message for r in caplog.records)
    assert not (tmp_path / "a" / "synthetic.pt").exists()  # a copy of the dataset: not written
