"""Faults end in one line and lose nothing: damaged or non-finite checkpoints, a held run
directory, read-only places and a full disk, keys that would fail late, a garbage file."""

import builtins
import errno
import io
import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY

from cmidd import app
from cmidd.tasks import distill


def _checkpointed_run(tiny, run_dir):
    distill(tiny("iterations=4", "checkpoint.every=2"), run_dir)
    return run_dir / "checkpoint.pt"


def _flip_a_byte_of_the_images(path):
    state = torch.load(path, weights_only=True)
    images = state["synthetic"]["images"]
    raw = images.view(-1).view(torch.uint8)
    raw[7] ^= 0x10
    torch.save(state, path)


def test_a_damaged_checkpoint_is_refused_in_one_line(tiny, app_error, tmp_path):
    path = _checkpointed_run(tiny, tmp_path / "run")
    _flip_a_byte_of_the_images(path)
    code, last = app_error("iterations=6", "checkpoint.every=2", out_dir=tmp_path / "run")
    assert code == 2 and "is damaged" in last and "delete it to start over" in last, last


def test_a_checkpoint_holding_nan_is_refused_in_one_line(tiny, app_error, tmp_path):
    from cmidd.files import digest

    path = _checkpointed_run(tiny, tmp_path / "run")
    state = torch.load(path, weights_only=True)
    state.pop("sha256")
    state["synthetic"]["images"][0, 0, 0, 0] = float("nan")
    torch.save({**state, "sha256": digest(state)}, path)  # an intact file of a broken state
    code, last = app_error("iterations=6", "checkpoint.every=2", out_dir=tmp_path / "run")
    assert code == 2 and "NaN or infinite values (synthetic.images)" in last, last


def test_a_second_run_into_a_held_directory_is_refused_naming_the_holder(app_error, tmp_path):
    release = app.hold(tmp_path / "run")
    try:
        code, last = app_error(out_dir=tmp_path / "run")
    finally:
        release()
    assert code == 2 and "in use by another run (pid " in last, last
    assert not (tmp_path / "run" / "error.txt").exists()  # nothing written into another's run


def _refuse_writes_under(monkeypatch, root, error):
    """Writes to paths that start with ``root`` fail with ``error`` (an errno): a read-only file
    system or a full disk, as root cannot make a directory read-only with permissions. A file
    opened for writing is created first, then fails on its first write, as on a full disk."""
    root = str(root)
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def inside(path) -> bool:
        return str(os.path.abspath(os.fspath(path))).startswith(root)

    class Failing(io.BufferedWriter):
        def write(self, data):
            raise OSError(error, os.strerror(error))

    def fake_open(path, mode="r", *args, **kwargs):
        if isinstance(path, int) or not inside(path) or not set(mode) & set("wax+"):
            return real_open(path, mode, *args, **kwargs)
        if error == errno.EROFS:
            raise OSError(error, os.strerror(error), str(path))
        return Failing(io.FileIO(path, "wb"))

    def fake_os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(error, os.strerror(error), str(path))
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path) and not os.path.isdir(path):
            raise OSError(error, os.strerror(error), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def test_a_read_only_cache_holding_a_complete_pool_serves_a_run(tiny, cache, tmp_path, monkeypatch):
    distill(tiny(), tmp_path / "first")  # builds the pool (demo preset: build_if_missing)
    _refuse_writes_under(monkeypatch, cache, errno.EROFS)
    results = distill(tiny(), tmp_path / "second")
    assert results["status"] == "finished" and results["cmi"]["start"] is not None


def test_a_read_only_run_directory_is_one_line(app_error, tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    _refuse_writes_under(monkeypatch, tmp_path / "run", errno.EROFS)
    code, last = app_error(out_dir=tmp_path / "run")
    assert code == 2 and "cannot be written" in last and "Read-only file system" in last, last


def test_a_full_disk_is_one_line_with_no_temporary_file_and_the_reason_kept(
    app_error, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    from cmidd import files

    real_save = files.save

    def save_on_a_full_disk(obj, path):
        if path.name == "checkpoint.pt":  # its temporary file, the next write
            _refuse_writes_under(monkeypatch, path.parent / f".{path.name}", errno.ENOSPC)
        return real_save(obj, path)

    monkeypatch.setattr(files, "save", save_on_a_full_disk)
    monkeypatch.setattr("cmidd.checkpoint.save", save_on_a_full_disk)
    code, last = app_error("iterations=4", "checkpoint.every=2", out_dir=run_dir)
    monkeypatch.undo()
    assert code == 2 and "checkpoint.pt could not be written" in last, last
    assert "No space left on device" in last
    assert not list(run_dir.glob(".*.tmp")), list(run_dir.iterdir())
    assert (run_dir / "error.txt").read_text() == last + "\n"
    status = json.loads((run_dir / "results.json").read_text())["status"]
    assert status.startswith("failed:") and "No space left on device" in status


@pytest.mark.parametrize(
    "override,named",
    [
        ("eval.lr=-1", "eval.lr=-1"),
        ("eval.batch_size=0", "eval.batch_size=0"),
        ("method.optimizer.lr=-1", "method.optimizer.lr=-1"),
        ("method.optimizer.lr=fast", "method.optimizer.lr=fast"),
    ],
)
def test_keys_are_refused_before_any_pool_is_built(override, named, app_error, cache):
    code, last = app_error(override, "eval.every=0")
    assert code == 2 and named in last, last
    assert not (cache / "proxies").exists()  # refused before the pool was built


def test_a_garbage_overrides_file_is_one_line_on_resume(tmp_path, cache):
    def launch(*extra):
        return subprocess.run(
            [sys.executable, "launch.py", *TINY, f"cache_dir={cache}", *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )

    run_dir = tmp_path / "run"
    assert launch(f"hydra.run.dir={run_dir}").returncode == 0
    (run_dir / "overrides.yaml").write_text("{ this: is: not [ yaml")
    done = launch(f"resume={run_dir}")
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and "is not a list of overrides" in last, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
