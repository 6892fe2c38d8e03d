"""task=evaluate: a saved synthetic set evaluated again, or refused clearly."""
import subprocess
import sys

import pytest
import torch

from cmidd.errors import UserError
from cmidd.synthetic import checksum
from cmidd.tasks import distill, evaluate

from conftest import ROOT, TINY


def test_evaluating_a_saved_set_reproduces_the_final_accuracy(tiny, tmp_path):
    distilled = distill(tiny("eval.models=2"), tmp_path / "run")
    again = evaluate(tiny("task=evaluate", "eval.models=2",
                          f"synthetic={tmp_path / 'run' / 'synthetic.pt'}"), tmp_path / "eval")
    assert again["accuracy"] == distilled["accuracy"]


@pytest.mark.parametrize("net", ["convnet", "convnet_bn"])
def test_vectorized_training_gives_the_sequential_accuracies(tiny, tmp_path, net):
    """Networks trained together as one vmapped model keep their own initialization, batch order
    and augmentation: each accuracy equals training it alone (BatchNorm statistics included)."""
    distill(tiny("iterations=0"), tmp_path / "run")
    common = ["task=evaluate", "eval.models=3", "eval.epochs=4", f"net@eval.nets.convnet={net}",
              "eval.nets.convnet.width=8", f"synthetic={tmp_path / 'run' / 'synthetic.pt'}"]
    alone = evaluate(tiny(*common, "eval.vectorize=false"), tmp_path / "alone")["accuracy"]
    together = evaluate(tiny(*common, "eval.vectorize=true"), tmp_path / "together")["accuracy"]
    runs = alone["convnet"]["runs"], together["convnet"]["runs"]
    assert len(set(runs[0])) > 1, "the networks should differ, or the test proves little"
    assert runs[0] == pytest.approx(runs[1], abs=2 / 540)  # at most one test image in 540 flips


def test_a_set_for_other_data_is_refused(tiny, tmp_path):
    distill(tiny(), tmp_path / "run")
    state = torch.load(tmp_path / "run" / "synthetic.pt", weights_only=True)
    state["images"] = torch.nn.functional.pad(state["images"], (4, 4, 4, 4))
    state["sha256"] = checksum(state)  # a sound file, for other data
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
