"""What a newcomer meets first: every method runs on the default data, the paths a run prints
can be pasted back, and the main job shows what CMI does."""

import json
import shlex
import subprocess
import sys

import pytest
from conftest import ROOT, TINY

# Short runs; no key of one method's own, so that every method of the table takes them.
SHORT = [o for o in TINY if not o.startswith("method.algorithm")]


def launch(*overrides, cache, cwd=ROOT):
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *overrides, f"cache_dir={cache}"],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


@pytest.mark.slow
def test_table1_finishes_every_job_on_the_default_data(tmp_path, cache):
    """Coresets, every base method without a weight for digits (auto sets it), MTT's experts and
    the proxies built on first use: no job fails."""
    sweep = tmp_path / "sweep"
    done = launch("sweep=table1", *SHORT, f"hydra.sweep.dir={sweep}", cache=cache)
    assert done.returncode == 0, done.stderr[-3000:]
    statuses = {
        path.parent.parent.name: json.loads(path.read_text())["status"]
        for path in sweep.glob("*/seed=0/results.json")
    }
    assert len(statuses) == 22, statuses  # 11 method options (the whole dataset too) x 2 cmi
    assert all(s == "finished" or s.startswith("skipped") for s in statuses.values()), statuses
    assert f"sweep results in {sweep}" in done.stderr
    assert f"report: python -m cmidd.report {sweep}" in done.stderr


def test_the_evaluate_command_a_run_prints_can_be_pasted(tmp_path, cache):
    """A sweep job's directory holds '=' and ',', which Hydra reads as syntax unless quoted."""
    run_dir = tmp_path / "cmi=feature,method=dm" / "seed=0"
    done = launch(*TINY, f'hydra.run.dir="{run_dir}"', cache=cache)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = next(
        line.split("evaluate it again: ", 1)[1]
        for line in (done.stdout + done.stderr).splitlines()
        if "evaluate it again: " in line
    )
    assert printed.startswith("python launch.py task=evaluate ")
    command = shlex.split(printed)[2:]  # as the shell passes it on
    again = launch(*command, f"hydra.run.dir={tmp_path / 'eval'}", cache=cache)
    assert again.returncode == 0, again.stderr[-2000:]
    original = json.loads((run_dir / "results.json").read_text())["accuracy"]
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["accuracy"] == original


def test_resume_writes_nothing_outside_its_run_directory_and_appends_to_its_log(tmp_path, cache):
    run_dir = tmp_path / "run"
    assert launch(*TINY, f"hydra.run.dir={run_dir}", cache=cache, cwd=tmp_path).returncode == 0
    before = (run_dir / "launch.log").read_text()
    resumed = launch(f"resume={run_dir}", "iterations=5", cache=cache, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "run"]  # no outputs/
    log = (run_dir / "launch.log").read_text()
    assert log.startswith(before) and "resumed from the checkpoint after 3 iterations" in log


def test_the_main_job_runs_the_method_with_and_without_cmi_side_by_side(tiny, tmp_path, capsys):
    from cmidd.compare import compare

    results = compare(tiny("task=compare"), tmp_path / "run", note="(what seeds showed)")
    base = json.loads((tmp_path / "run" / "base" / "results.json").read_text())
    assert base["config"]["cmi"]["weight"] == 0 and results["cmi"]["weight"] == 1000
    assert base["cmi"]["start"] == results["cmi"]["start"]  # the same start and the same pool
    assert results["cmi"]["end"] < base["cmi"]["end"]
    printed = capsys.readouterr().out
    for line in ("DM with and without CMI", "  DM  ", "  DM + CMI", "difference", "what seeds"):
        assert line in printed, printed
    assert (tmp_path / "run" / "comparison.png").stat().st_size > 0
    rows = json.loads((tmp_path / "run" / "comparison.json").read_text())
    assert rows["DM + CMI"]["cmi_end"] == results["cmi"]["end"]
    # Without a CMI term there is nothing to compare: the run alone.
    compare(tiny("task=compare", "cmi=none"), tmp_path / "alone")
    assert not (tmp_path / "alone" / "base").exists()
