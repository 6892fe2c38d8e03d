"""benchmarks/run.py --quick: the whole benchmark pipeline on tiny digits (not its numbers)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow  # over a minute on 2 cores: CI runs it (pytest -m slow)
def test_quick_benchmark_writes_well_formed_json_and_summary(tmp_path, cache):
    out = tmp_path / "bench"
    env = {**os.environ, "CMIDD_CACHE": str(cache)}
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--device", "cpu", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "benchmarks.json").read_text())
    sections = report["sections"]
    assert set(sections) == {
        "accuracy",
        "cost",
        "paper_step",
        "evaluation",
        "memory",
        "mtt_memory",
        "storage",
        "speed",
        "speed_options",
        "fuse",
    }
    assert "skipped" in sections["storage"]  # the quick settings' digits stay in memory
    assert "skipped" in sections["fuse"]  # compiling takes minutes
    assert sections["paper_step"]["speedup"] > 0
    for method in ("dm", "dsa"):
        acc = sections["accuracy"][method]
        assert not acc["failed"], acc["failed"]
        for row in ("random", "base", "cmi"):
            assert acc[row]["done"] == 2 and 0 <= acc[row]["mean"] <= 1, (method, row, acc[row])
        assert acc["base"]["weight"] == 0 and acc["cmi"]["weight"] == 100
        assert [it for it, _ in acc["convergence"]["curves"]["cmi"]] == [0, 2, 4]
        cost = sections["cost"][method]
        assert cost["ratio_cmi"] > 0 and cost["seconds_per_iteration"]["base"] > 0
        assert cost["ratio_auto_to_cmi"] > 0
    assert sections["accuracy"]["dm"]["cmi_every"]["done"] == 2
    assert sections["evaluation"]["protocol"]["speedup_vectorized"] > 0
    assert sections["memory"]["whole_bytes"] > 0
    speed = sections["speed"]
    assert {"dm_digits", "evaluation_network", "proxy_epoch"} <= set(speed)
    assert all(speed[k]["speedup"] > 0 for k in ("dm_digits", "evaluation_network", "proxy_epoch"))
    options = sections["speed_options"]
    assert set(options["dm_digits"]["seconds"]) == {"float32", "channels_last", "bf16"}
    assert set(options["evaluation_digits"]["accuracy"]) == {
        "float32",
        "channels_last",
        "bf16",
        "compile",
        "all",
    }
    assert set(sections["mtt_memory"]["mib_by_steps"]) == {"1", "2"}
    summary = (out / "summary.md").read_text()
    assert "## Accuracy" in summary and "## Cost per iteration" in summary
    assert "## Memory of one MTT iteration" in summary and "| proxy_epoch |" in summary
    assert "python benchmarks/run.py --quick" in summary
    assert "## Speed options against float32" in summary and "| evaluation_digits |" in summary


def test_proxy_pool_extrapolates_each_architecture_from_its_own_recipe(tiny, monkeypatch):
    """benchmarks/proxy_pool.py's numbers: one epoch per architecture, the pool's minutes scaled
    by that config's pool size, epochs and training set."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from speed import proxy_pool_speed

    overrides = ["proxy.net.width=4", "proxy.pool_size=3", "proxy.recipe.epochs=2"]
    out = proxy_pool_speed(lambda o: tiny(*o), overrides, ["convnet", "alexnet"], 64, 1)
    assert set(out["seconds"]) == {"convnet", "alexnet"} and out["speedups"]["convnet"] == 1
    assert out["train_images"] > out["images"] == 64
    for name, seconds in out["seconds"].items():
        expected = seconds * out["train_images"] / 64 * 2 * 3 / 60
        assert out["pool_minutes"][name] == pytest.approx(expected)
