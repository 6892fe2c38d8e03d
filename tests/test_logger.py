"""W&B logging: offline into the run directory, and never able to fail a run."""
import json

import pytest

from cmidd.tasks import distill


def test_wandb_offline_run_is_written_into_the_run_directory(tiny, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: auto mode must choose offline
    distill(tiny("logger=wandb"), tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))


def test_a_broken_logger_does_not_fail_the_run(tiny, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")

    def broken(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(wandb, "init", broken)
    results = distill(tiny("logger=wandb"), tmp_path)
    assert results["status"] == "finished"
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "finished"
