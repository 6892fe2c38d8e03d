"""Data-parallel evaluation under torchrun (cmidd.distributed): 2 CPU processes with gloo train
the same student as one process, and launch.py under torchrun evaluates a saved set once."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import ROOT, compose_config
from test_sre2l import SRE2L

from cmidd import distributed
from cmidd.kd_eval import KDEvaluator
from cmidd.nets import ConvNet
from cmidd.relabel import relabel


def _case():
    """10 images and 3 epochs of their views in batches of 5, labelled by a random teacher."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(10, 3, 12, 12, generator=g)
    torch.manual_seed(2)
    teacher = ConvNet(3, 4, 12, width=4, depth=2, norm="instance").eval()
    soft = relabel(images, teacher, epochs=3, batch_size=5, generator=g)
    return images, soft


def _student():
    # No norm layer: a conv bias before a normalization has a gradient of rounding noise only,
    # which Adam scales up to full steps, so it would differ between any two float orders.
    torch.manual_seed(1)
    return ConvNet(3, 4, 12, width=6, depth=2, norm="none")


def _evaluator():
    return KDEvaluator(
        {"convnet": ConvNet}, models=1, epochs=3, lr=0.01, weight_decay=0.01, temperature=4.0
    )


def _train_in_process(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    images, soft = _case()
    net = _student()
    _evaluator().train(net, images, soft)
    if rank == 0:
        torch.save(net.state_dict(), out)
    dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_train_the_student_one_process_trains(tmp_path):
    # Shares of 3 and 2 rows: the loss is scaled so that the averaged gradient is the batch's.
    out = tmp_path / "rank0.pt"
    mp.spawn(_train_in_process, args=(_free_port(), str(out)), nprocs=2, join=True)
    images, soft = _case()
    alone = _student()
    _evaluator().train(alone, images, soft)
    together = torch.load(out, weights_only=True)
    untrained = _student().state_dict()
    for name, value in alone.state_dict().items():
        assert not torch.equal(value, untrained[name]) or value.ndim == 0, name
        assert torch.allclose(together[name], value, atol=1e-5), name


def test_a_share_is_the_tensor_split_of_the_batch(monkeypatch):
    batch = torch.arange(7)
    monkeypatch.setattr(distributed, "size", lambda: 3)
    shares = []
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shares.append(distributed.share(batch))
    assert [s.tolist() for s in shares] == [t.tolist() for t in batch.tensor_split(3)]


@pytest.fixture
def saved_set(tmp_path):
    """A tiny SRe2L set on digits (its student a ConvNet without norm layers, whose training does
    not depend on how the batch is shared), and its one-process evaluation."""
    from cmidd.tasks import distill, evaluate

    student = [
        "net@eval.nets.convnet_bn=convnet",
        "eval.nets.convnet_bn.width=8",
        "eval.nets.convnet_bn.norm=none",
        "eval.epochs=3",
    ]
    cfg = compose_config([*SRE2L, *student, "cmi.weight=0"], cache_dir=tmp_path / "cache")
    distill(cfg, tmp_path / "run")
    synthetic = tmp_path / "run" / "synthetic.pt"
    again = [*SRE2L, *student, f"synthetic={synthetic}", "task=evaluate"]
    alone = evaluate(compose_config(again, cache_dir=tmp_path / "cache"), tmp_path / "alone")
    return again, alone


def _torchrun(overrides, tmp_path, env=None):
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"),
        *("--master_port", str(_free_port())),
        str(ROOT / "launch.py"),
        *overrides,
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'torchrun'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_torchrun_evaluates_a_saved_set_data_parallel(saved_set, tmp_path):
    overrides, alone = saved_set
    done = _torchrun(overrides, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "torchrun" / "results.json").read_text())
    assert results["processes"] == 2
    soft = {arch: r for arch, r in alone["accuracy"].items() if not arch.startswith("hard/")}
    assert soft and set(results["accuracy"]) == set(soft)  # eval.hard is skipped under torchrun
    assert "eval.hard is skipped under torchrun" in done.stdout + done.stderr
    for arch, r in soft.items():
        assert results["accuracy"][arch]["mean"] == pytest.approx(r["mean"], abs=0.01), arch


def test_under_torchrun_what_runs_in_one_process_is_one_line(tmp_path, monkeypatch, capsys):
    from cmidd import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    for overrides, says in [
        (["task=distill"], "task=distill runs in one process"),
        (["task=evaluate", "synthetic=x.pt", "eval=default"], "data-parallel with eval=kd only"),
    ]:
        base = [o for o in SRE2L if not o.startswith(("eval.nets", "eval.hard"))]  # eval=default
        cfg = compose_config([*base, *overrides], cache_dir=tmp_path / "cache")
        with pytest.raises(SystemExit) as stop:
            app.run(cfg, tmp_path / "stopped")
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert stop.value.code == 2 and says in last, last
