"""Files a user hands in are untrusted; a diverged, damaged or unsaved set never poses as a
result. Each failure is exit status 2 with one `error:` line naming the file or key."""

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY

from cmidd.synthetic import SyntheticSet, checksum
from cmidd.tasks import distill


def launch(tmp_path, cache, *overrides, run_dir=None):
    run_dir = run_dir or tmp_path / "run"
    return subprocess.run(
        [
            sys.executable,
            "launch.py",
            *TINY,
            f"cache_dir={cache}",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_error_line(done, *named):
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "\x1b" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(n in last for n in named), last
    return last


class RunsCode:
    """Unpickling this runs a shell command (what a crafted file would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path, cache):
    run_dir, marker = tmp_path / "run", tmp_path / "code-ran"
    run_dir.mkdir()
    torch.save({"iteration": 1, "config": RunsCode(marker)}, run_dir / "checkpoint.pt")
    done = launch(tmp_path, cache, f"resume={run_dir}")
    last = one_error_line(done, str(run_dir / "checkpoint.pt"), "refused")
    assert not marker.exists()
    assert "weights_only" not in last and last.endswith("start over")


def test_a_crafted_synthetic_set_is_refused_without_running_its_code(tmp_path, cache):
    path, marker = tmp_path / "synthetic.pt", tmp_path / "code-ran"
    torch.save({"images": torch.zeros(10, 1, 8, 8), "labels": RunsCode(marker)}, path)
    done = launch(tmp_path, cache, "task=evaluate", f"synthetic={path}")
    one_error_line(done, f"synthetic={path}", "refused")
    assert not marker.exists()


def test_a_checkpoint_holds_only_tensors_and_plain_containers(tiny, tmp_path):
    distill(tiny("iterations=2", "method=idm", "ipc=1", "cmi.weight=1"), tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # IDM: nets, optimizers
    assert state["iteration"] == 2 and state["results"]["status"] == "finished"


def test_non_finite_numbers_are_refused_before_any_work(app_error, cache):
    for override in (
        "cmi.weight=nan",
        "cmi.weight=inf",
        "cmi.weight=-inf",
        "method.optimizer.lr=nan",
        "method.algorithm.augment.scale=inf",
    ):
        code, last = app_error(override)
        assert code == 2 and last.startswith(f"error: {override} is invalid"), last
    assert not (cache / "proxies").exists()  # no pool was built: nothing ran


@pytest.mark.slow  # a launcher process, about 13 s on 2 cores: CI runs it (pytest -m slow)
def test_a_diverged_run_keeps_its_last_finite_set(tmp_path, cache):
    done = launch(tmp_path, cache, "method.optimizer.lr=1e30", "iterations=5", "cmi.weight=0")
    last = one_error_line(done, "method.optimizer.lr", "last finite set")
    saved = SyntheticSet.load(tmp_path / "run" / "synthetic.pt")  # refuses a non-finite set
    assert f"after {saved.meta['iteration']} iterations" in last
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"].startswith("failed: NonFiniteError")


def test_a_non_finite_set_is_never_evaluated(tmp_path, cache):
    state = {
        "images": torch.full((100, 1, 8, 8), float("nan")),
        "labels": torch.arange(10).repeat_interleave(10),
        "mean": [0.3],
        "std": [0.4],
        "factor": 1,
        "lr": None,
    }
    state["sha256"] = checksum(state)
    torch.save(state, tmp_path / "nan.pt")
    done = launch(tmp_path, cache, "task=evaluate", f"synthetic={tmp_path / 'nan.pt'}")
    one_error_line(done, f"synthetic={tmp_path / 'nan.pt'}", "NaN")


def test_a_damaged_set_is_refused_naming_the_file(tiny, tmp_path, cache):
    distill(tiny("iterations=1"), tmp_path / "run")
    path = tmp_path / "run" / "synthetic.pt"
    data = bytearray(path.read_bytes())
    images = SyntheticSet.load(path).images
    # Flip one byte inside the stored images (found by its value), not in the zip structure.
    needle = images[3, 0, 4].detach().numpy().tobytes()
    where = bytes(data).index(needle)
    data[where] ^= 0x40
    flipped = tmp_path / "flipped.pt"
    flipped.write_bytes(bytes(data))
    done = launch(
        tmp_path, cache, "task=evaluate", f"synthetic={flipped}", run_dir=tmp_path / "evaluate"
    )
    one_error_line(done, f"synthetic={flipped}", "checksum")


@pytest.mark.slow  # a launcher process, about 14 s on 2 cores: CI runs it (pytest -m slow)
def test_a_failed_final_save_says_so_in_the_results(tmp_path, cache):
    run_dir = tmp_path / "run"
    (run_dir / "synthetic.pt").mkdir(parents=True)  # the path is blocked by a directory
    done = launch(tmp_path, cache, "iterations=1")
    one_error_line(done, str(run_dir / "synthetic.pt"), "could not be written")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"].startswith("failed") and "synthetic.pt" in results["status"]
    assert results["accuracy"]  # what was computed is kept
