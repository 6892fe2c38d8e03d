"""Bad input ends with exit status 2 and one `error:` line naming the key and value."""

import subprocess
import sys

import pytest
from conftest import ROOT, TINY

CASES = {
    "ipc=0": "ipc=0",
    "ipc=-3": "ipc=-3",
    "iterations=-1": "iterations=-1",
    "cmi.weight=-1": "cmi.weight=-1",
    "cmi.space=logits": "cmi.space=logits",
    "eval.models=0": "eval.models=0",
    "eval.vectorize=sometimes": "eval.vectorize=sometimes",
    "ipc=500 cmi.weight=1": "ipc=500",
    "dataset=imagefolder cmi.weight=1 dataset.loader.root=/no/such/dir": (
        "dataset.loader.root=/no/such/dir"
    ),
    "dataset=cifar10 cmi.weight=1 data_root=/no/such/dir": "data_root=/no/such/dir",
    "method=idc ipc=20 cmi.weight=1": "method.optimizer.lr has no value: method.lr_img_by has "
    "no entry for [digits, 20]",
    "ipc=500": "ipc=500",  # too large for the data: not reported as a missing weight entry
    "log_every=0": "log_every=0",
    "checkpoint.every=-1": "checkpoint.every=-1",
    "dataset=imagefolder": "dataset.loader.root=???",
    "cmi.weight=nan": "cmi.weight=nan",
    "eval.lr=inf": "eval.lr=inf",
    "method=idc ipc=40 cmi.weight=1": "ipc=40",  # 40 x 4 real images per class for IDC's init
    "eval.nets.convnet=null": "eval.nets is empty",  # null leaves an architecture out
    "+eval.nets.vgg={width:8}": "eval.nets.vgg={'width': 8} is not a net config",
}


@pytest.mark.parametrize("overrides,named", sorted(CASES.items()))
def test_bad_input_is_one_clear_line(overrides, named, app_error, tmp_path):
    code, last = app_error(*overrides.split())
    assert code == 2 and last.startswith("error: ") and named in last, last
    assert (tmp_path / "run" / "error.txt").read_text() == last + "\n"


def test_the_launcher_gives_one_line_and_no_traceback(cache, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "launch.py",
            *TINY,
            f"cache_dir={cache}",
            f"hydra.run.dir={tmp_path}",
            "dataset=imagefolder",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: dataset.loader.root=???")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_hints_at_cpu(cache, tmp_path):
    tiny = [o for o in TINY if not o.startswith("device=")]
    done = subprocess.run(
        [
            sys.executable,
            "launch.py",
            *tiny,
            "device=cuda",
            f"cache_dir={cache}",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "device=cpu" in done.stderr.strip().splitlines()[-1]
