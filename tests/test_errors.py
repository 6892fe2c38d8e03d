"""Bad input ends with exit status 2 and one `error:` line naming the key and value."""
import subprocess
import sys

import pytest

from conftest import ROOT, TINY

CASES = {
    "ipc=0": "ipc=0", "ipc=-3": "ipc=-3", "iterations=-1": "iterations=-1",
    "cmi.weight=-1": "cmi.weight=-1", "cmi.space=logits": "cmi.space=logits",
    "eval.models=0": "eval.models=0", "eval.vectorize=sometimes": "eval.vectorize=sometimes", "ipc=500 cmi.weight=1": "ipc=500",
    "dataset=imagefolder cmi.weight=1 dataset.loader.root=/no/such/dir":
        "dataset.loader.root=/no/such/dir",
    "dataset=cifar10 cmi.weight=1 data_root=/no/such/dir": "data_root=/no/such/dir",
    "ipc=20 proxy=resnet18": "no entry for [resnet18, digits, 20]",
}


@pytest.mark.parametrize("overrides,named", sorted(CASES.items()))
def test_bad_input_is_one_clear_line(overrides, named, cache, tmp_path):
    done = subprocess.run([sys.executable, "launch.py", *TINY, f"cache_dir={cache}",
                           f"hydra.run.dir={tmp_path}", *overrides.split()],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and named in last


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_hints_at_cpu(cache, tmp_path):
    tiny = [o for o in TINY if not o.startswith("device=")]
    done = subprocess.run([sys.executable, "launch.py", *tiny, "device=cuda", f"cache_dir={cache}",
                           f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "device=cpu" in done.stderr.strip().splitlines()[-1]
