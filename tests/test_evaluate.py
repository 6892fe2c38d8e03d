"""task=evaluate: a saved synthetic set evaluated again, or refused clearly."""
import subprocess
import sys

import pytest
import torch

from cmidd.errors import UserError
from cmidd.tasks import distill, evaluate

from conftest import ROOT, TINY


def test_evaluating_a_saved_set_reproduces_the_final_accuracy(tiny, tmp_path):
    distilled = distill(tiny("eval.models=2"), tmp_path / "run")
    again = evaluate(tiny("task=evaluate", "eval.models=2",
                          f"synthetic={tmp_path / 'run' / 'synthetic.pt'}"), tmp_path / "eval")
    assert again["accuracy"] == distilled["accuracy"]


def test_a_set_for_other_data_is_refused(tiny, tmp_path):
    distill(tiny(), tmp_path / "run")
    state = torch.load(tmp_path / "run" / "synthetic.pt", weights_only=True)
    state["images"] = torch.nn.functional.pad(state["images"], (4, 4, 4, 4))
    torch.save(state, tmp_path / "padded.pt")
    with pytest.raises(UserError, match=r"shape \(1, 16, 16\).*digits has \(1, 8, 8\)"):
        evaluate(tiny("task=evaluate", f"synthetic={tmp_path / 'padded.pt'}"), tmp_path / "eval")


@pytest.mark.parametrize("content", [b"", b"not a torch file", None])
def test_a_corrupt_truncated_or_missing_file_is_one_clear_line(tmp_path, cache, content):
    target = tmp_path / "synthetic.pt"
    if content is not None:
        target.write_bytes(content)
    done = subprocess.run([sys.executable, "launch.py", "task=evaluate", *TINY, f"synthetic={target}",
                           f"cache_dir={cache}", f"hydra.run.dir={tmp_path / 'out'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: synthetic={target} cannot be read")
