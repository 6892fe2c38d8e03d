"""W&B logging: offline into the run directory, and never able to fail a run."""

import json
import subprocess

import pytest

from cmidd.tasks import distill


def inspect(run_dir, *flags):
    """Read an offline W&B run back with W&B's own tool."""
    done = subprocess.run(
        ["wandb", "leet", "inspect", "--json", *flags, str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_wandb_offline_run_records_metrics_summary_and_artifact(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: mode auto must choose offline
    results = distill(tiny("logger=wandb", "eval.every=2"), tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1

    run = json.loads(inspect(runs[0], "--summary"))
    assert run["state"] == "finished" and run["config"]["ipc"] == 10
    assert run["config"]["cmi"]["weight"] == 1000  # resolved, a plain value
    assert {"method:dm", "dataset:digits", "ipc:10", "cmi:feature"} <= set(run["tags"])
    summary = run["summary"]
    assert summary["accuracy/convnet"] == pytest.approx(results["accuracy"]["convnet"]["mean"])
    assert summary["cmi/end"] == pytest.approx(results["cmi"]["end"])
    assert "loss/distill" in summary and "loss/cmi" in summary and "eval/convnet" in summary

    records = [json.loads(line) for line in inspect(runs[0]).splitlines()]
    artifacts = [r["artifact"] for r in records if r.get("type") == "artifact"]
    assert any(
        a.get("type") == "dataset" and a["name"].startswith("synthetic-dm-digits")
        for a in artifacts
    )
    steps = [r for r in records if r.get("type") == "history"]
    assert len(steps) >= 3


def test_a_broken_logger_does_not_fail_the_run(tiny, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")

    def broken(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(wandb, "init", broken)
    results = distill(tiny("logger=wandb"), tmp_path)
    assert results["status"] == "finished"
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "finished"


def test_progress_rate_leaves_out_evaluations_and_adds_those_still_due():
    from cmidd.progress import Progress

    now = [100.0]
    progress = Progress(10, clock=lambda: now[0])
    now[0] += 30.0  # an evaluation before the first step
    progress.exclude(30.0)
    now[0] += 2.0  # one step of 2 s
    assert progress.status(1) == "1/10, 2 s/it, 18s left"
    assert progress.status(1, extra=60.0) == "1/10, 2 s/it, 1m 18s left"
    assert Progress(5).status(0) == "0/5"
