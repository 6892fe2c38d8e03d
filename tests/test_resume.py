"""Checkpoints: a killed or preempted run resumes to the same synthetic set."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY

from cmidd.errors import UserError
from cmidd.methods import DM
from cmidd.synthetic import SyntheticSet
from cmidd.tasks import distill

RESUMABLE = ["iterations=8", "checkpoint.every=2", "eval.every=3"]


def crash_at(monkeypatch, method, iteration: int):
    """Make ``method``'s losses raise at ``iteration``, as if killed after the checkpoint of the
    iteration before; returns the function that restores it."""
    original = method.losses

    def crash(self, synthetic, at):
        if at == iteration:
            raise KeyboardInterrupt
        yield from original(self, synthetic, at)

    monkeypatch.setattr(method, "losses", crash)
    return lambda: monkeypatch.setattr(method, "losses", original)


def crash_at_iteration_five(monkeypatch):
    return crash_at(monkeypatch, DM, 5)


def final_images(out_dir):
    return SyntheticSet.load(out_dir / "synthetic.pt").images


def test_a_crash_then_resume_equals_an_uninterrupted_run(tiny, tmp_path, monkeypatch):
    distill(tiny(*RESUMABLE), tmp_path / "whole")

    restore = crash_at_iteration_five(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        distill(tiny(*RESUMABLE), tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["iteration"] == 4
    restore()
    results = distill(tiny(*RESUMABLE), tmp_path / "resumed")
    assert torch.equal(final_images(tmp_path / "whole"), final_images(tmp_path / "resumed"))
    assert [p["iteration"] for p in results["accuracy_curve"]] == [0, 3, 6, 8]


def test_a_checkpoint_of_the_earlier_layout_resumes_to_the_same_set(tiny, tmp_path, monkeypatch):
    distill(tiny(*RESUMABLE, "cmi.weight=auto"), tmp_path / "whole")
    restore = crash_at_iteration_five(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        distill(tiny(*RESUMABLE, "cmi.weight=auto"), tmp_path / "resumed")
    restore()
    # As written before the CMI term kept its own state and the method option its factor, and
    # before checkpoints carried a checksum.
    path = tmp_path / "resumed" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state.pop("sha256")
    term = state.pop("cmi")
    state |= {"proxy_generator": term["generator"], "cmi_weight": term["auto"]}
    method = state["config"]["method"]  # the one dict state["results"]["config"] holds too
    del method["factor"]
    method["needs"] = []
    torch.save(state, path)
    distill(tiny(*RESUMABLE, "cmi.weight=auto"), tmp_path / "resumed")
    assert torch.equal(final_images(tmp_path / "whole"), final_images(tmp_path / "resumed"))


def test_a_checkpoint_from_other_settings_is_refused_naming_the_keys(tiny, tmp_path):
    distill(tiny(*RESUMABLE), tmp_path)
    with pytest.raises(UserError, match=r"seed=0 \(now 1\).*"):
        distill(tiny(*RESUMABLE, "seed=1"), tmp_path)
    distill(tiny(*RESUMABLE, "log_every=3"), tmp_path)  # settings that change nothing are fine


def test_a_failed_checkpoint_write_keeps_the_previous_one(tiny, tmp_path, monkeypatch):
    saves = []
    real_save = torch.save

    def save_then_die(obj, file, *args, **kwargs):
        if Path(file.name).name.startswith(".checkpoint.pt."):
            saves.append(file.name)
            if len(saves) == 2:
                file.write(b"\x80\x02 half a checkpoint")
                raise KeyboardInterrupt  # killed in the middle of the second write
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        distill(tiny(*RESUMABLE), tmp_path)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["iteration"] == 2
    assert not list(tmp_path.glob(".*.tmp"))  # the half-written file is gone
    distill(tiny(*RESUMABLE), tmp_path)  # resumes from iteration 2 and finishes


def launch(out_dir, cache, *extra):
    """The run in a subprocess; its console output goes to a file (a pipe could fill up)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    console = open(out_dir.parent / f"{out_dir.name}.console", "a")
    job = subprocess.Popen(
        [
            sys.executable,
            "launch.py",
            *TINY,
            "iterations=150",
            "log_every=50",
            "checkpoint.every=5",
            f"cache_dir={cache}",
            f"hydra.run.dir={out_dir}",
            *extra,
        ],
        cwd=ROOT,
        stdout=console,
        stderr=console,
    )
    job.console = out_dir.parent / f"{out_dir.name}.console"
    return job


# Both take about a minute on 2 cores (three launcher processes each), and the in-process crash
# tests above share their path: CI runs them (pytest -m slow).
@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_a_killed_process_resumes_with_the_same_command(tmp_path, cache, how):
    whole = launch(tmp_path / "whole", cache)
    assert whole.wait(timeout=300) == 0, whole.console.read_text()[-2000:]

    run_dir = tmp_path / "run"
    job = launch(run_dir, cache)
    deadline = time.time() + 120
    while not (run_dir / "checkpoint.pt").exists():
        assert job.poll() is None and time.time() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    job.send_signal(getattr(signal, how))
    code = job.wait(timeout=120)
    expected = {"SIGKILL": -9, "SIGTERM": 3, "SIGINT": 130}[how]
    assert code == expected, job.console.read_text()[-2000:]
    stopped_at = torch.load(run_dir / "checkpoint.pt", weights_only=True)["iteration"]
    assert 0 < stopped_at < 150
    if how != "SIGKILL":  # one count everywhere: the message, results.json and the checkpoint
        how_stopped = "interrupted" if how == "SIGINT" else "preempted"
        last = job.console.read_text().strip().splitlines()[-1]
        assert last == (
            f"{how_stopped}: stopped after {stopped_at} iterations; the checkpoint is saved: "
            f"resume with python launch.py resume={run_dir.resolve()}"
        ), job.console.read_text()[-2000:]
        assert "Traceback" not in job.console.read_text()
        status = json.loads((run_dir / "results.json").read_text())["status"]
        assert status == f"{how_stopped} after {stopped_at} iterations"

    again = launch(run_dir, cache)  # the same command, the same run directory
    assert again.wait(timeout=300) == 0, again.console.read_text()[-2000:]
    assert torch.equal(final_images(tmp_path / "whole"), final_images(run_dir))


def test_a_resumed_run_continues_the_same_wandb_run(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    restore = crash_at_iteration_five(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        distill(tiny(*RESUMABLE, "logger=wandb"), tmp_path)
    restore()
    distill(tiny(*RESUMABLE, "logger=wandb"), tmp_path)
    # Each offline run directory holds run-<id>.wandb; the resumed run must reuse the id.
    logs = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    run_ids = {p.stem.removeprefix("run-") for p in logs}
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert run_ids == {checkpoint["logger_run_id"]}


def test_resume_continues_in_the_named_run_directory(tiny, tmp_path, monkeypatch, capsys):
    from cmidd import app

    restore = crash_at_iteration_five(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        distill(tiny(*RESUMABLE), tmp_path / "first")
    restore()
    results = app.run(tiny(*RESUMABLE, f"resume={tmp_path / 'first'}"), tmp_path / "elsewhere")
    assert results["status"] == "finished" and not (tmp_path / "elsewhere").exists()
    distill(tiny(*RESUMABLE), tmp_path / "whole")
    assert torch.equal(final_images(tmp_path / "whole"), final_images(tmp_path / "first"))
    with pytest.raises(SystemExit) as stop:
        app.run(tiny(*RESUMABLE, f"resume={tmp_path / 'whole' / 'nothing'}"), tmp_path / "x")
    assert stop.value.code == 2 and "has no checkpoint.pt" in capsys.readouterr().err


def relaunch(run_dir, *overrides, console=None):
    """``python launch.py resume=<run_dir> ...`` (Hydra's own output in ``console``)."""
    command = [sys.executable, "launch.py", f"resume={run_dir}", *overrides]
    command.append(f"hydra.run.dir={console or run_dir.parent / 'console'}")
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # four launcher processes, about 40 s on 2 cores
def test_resume_alone_continues_a_run_with_its_own_settings(tmp_path, cache):
    run_dir = tmp_path / "run"
    dsa = ["method=dsa", "method.algorithm.loops=[1,1]", "cmi.weight=10", "checkpoint.every=1"]
    first = launch(run_dir, cache, *dsa, "iterations=2")
    assert first.wait(timeout=300) == 0, first.console.read_text()[-2000:]
    (run_dir / "overrides.yaml").unlink()  # as a run from before cmidd's file: Hydra's is read
    # Only resume= and the new budget: method, weight and the tiny settings are the run's own.
    done = relaunch(run_dir, "iterations=3", "log_every=2")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["iterations"] == 3 and results["config"]["method"]["name"] == "dsa"
    assert results["config"]["cmi"]["weight"] == 10 and results["config"]["cache_dir"] == str(cache)
    # Again, Hydra writing into the run directory itself: the settings of both commands hold.
    done = relaunch(run_dir, "iterations=4", console=run_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["iterations"] == 4 and results["config"]["log_every"] == 2
    assert results["config"]["method"]["name"] == "dsa"
    # A command whose overrides no longer compose with the run's: one line, naming them.
    done = relaunch(run_dir, "method=dm")
    assert done.returncode == 2 and "do not compose" in done.stderr.splitlines()[-1], done.stderr


def test_the_run_puts_back_the_signal_handlers_it_found(tiny, tmp_path):
    # A local multirun runs its jobs in one process: a handler left behind by a finished job
    # would swallow a SIGTERM meant for the next one (found when a sweep ignored `kill`).
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    distill(tiny("iterations=1"), tmp_path / "run")
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_finished_run_is_extended_by_resuming_with_more_iterations(tiny, tmp_path):
    from cmidd import app

    straight = distill(tiny("iterations=8", "eval.every=4"), tmp_path / "straight")
    distill(tiny("iterations=4", "eval.every=4"), tmp_path / "short")
    extended = app.run(
        tiny("iterations=8", "eval.every=4", f"resume={tmp_path / 'short'}"), tmp_path / "unused"
    )
    assert torch.equal(final_images(tmp_path / "straight"), final_images(tmp_path / "short"))
    assert extended["accuracy_curve"] == straight["accuracy_curve"]  # [0, 4, 8], 4 evaluated once
    assert extended["iterations"] == 8 and extended["config"]["iterations"] == 8
    with pytest.raises(UserError, match="iterations=6 is invalid: checkpoint .* after 8"):
        distill(tiny("iterations=6", "eval.every=4"), tmp_path / "short")
    with pytest.raises(UserError, match=r"seed=0 \(now 1\)"):  # other settings still must match
        distill(tiny("iterations=9", "eval.every=4", "seed=1"), tmp_path / "short")
