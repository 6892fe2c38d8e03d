"""task=evaluate: a saved synthetic set evaluated again, or refused clearly."""

import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY

from cmidd.errors import UserError
from cmidd.synthetic import checksum
from cmidd.tasks import distill, evaluate


def test_evaluating_a_saved_set_reproduces_the_final_accuracy(tiny, tmp_path):
    distilled = distill(tiny("eval.models=2"), tmp_path / "run")
    again = evaluate(
        tiny("task=evaluate", "eval.models=2", f"synthetic={tmp_path / 'run' / 'synthetic.pt'}"),
        tmp_path / "eval",
    )
    assert again["accuracy"] == distilled["accuracy"]


@pytest.mark.parametrize("net", ["convnet", "convnet_bn"])
def test_vectorized_training_gives_the_sequential_accuracies(tiny, tmp_path, net):
    """Networks trained together as one vmapped model keep their own initialization, batch order
    and augmentation: each accuracy equals training it alone (BatchNorm statistics included)."""
    distill(tiny("iterations=0"), tmp_path / "run")
    common = [
        "task=evaluate",
        "eval.models=3",
        "eval.epochs=4",
        f"net@eval.nets.convnet={net}",
        "eval.nets.convnet.width=8",
        f"synthetic={tmp_path / 'run' / 'synthetic.pt'}",
    ]
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


# Three launcher processes, about 27 s on 2 cores: CI runs them (pytest -m slow).
@pytest.mark.slow
@pytest.mark.parametrize("content", [b"", b"not a torch file", None])
def test_a_corrupt_truncated_or_missing_file_is_one_clear_line(tmp_path, cache, content):
    target = tmp_path / "synthetic.pt"
    if content is not None:
        target.write_bytes(content)
    done = subprocess.run(
        [
            sys.executable,
            "launch.py",
            *TINY,
            "task=evaluate",
            f"synthetic={target}",
            f"cache_dir={cache}",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: synthetic={target} cannot be read")


def test_each_reference_protocol_is_an_eval_option():
    from conftest import compose_config
    from omegaconf import OmegaConf

    def protocol(*overrides):
        cfg = compose_config(["experiment=paper", *overrides])
        return OmegaConf.to_container(cfg.eval, resolve=True)

    dc, idc, default = protocol("eval=dc"), protocol("eval=idc"), protocol("eval=default")
    assert (dc["epochs"], dc["lr_milestones"], dc["augment"]) == (300, [150], None)
    assert (default["epochs"], default["lr_milestones"], default["batch_size"]) == (
        1000,
        [500],
        256,
    )
    assert default["augment"]["strategy"] == ["color", "crop", "cutout", "flip", "scale", "rotate"]
    assert (idc["epochs"], idc["lr_milestones"], idc["lr_gamma"], idc["batch_size"]) == (
        1000,
        [666, 833],
        0.2,
        64,
    )
    assert not idc["restart_momentum"] and idc["cutmix"] == 0.5
    assert idc["augment"]["always"] == ["flip", "color"]
    # experiment=paper evaluates each method by its own reference; eval=... chooses one for all.
    assert protocol("method=dc") == dc and protocol("method=idc") == idc
    for method in ("dm", "dsa", "idm", "mtt"):
        assert protocol(f"method={method}") == default
    assert protocol("method=idc", "eval=default") == default


def test_the_schedule_restarts_momentum_or_lowers_the_lr_in_place():
    from cmidd.train import StepSchedule

    net = torch.nn.Linear(2, 1)
    lrs = {}
    for restart in (True, False):
        schedule = StepSchedule([2, 3], gamma=0.2, restart=restart)
        optimizer = torch.optim.SGD(net.parameters(), lr=1.0, momentum=0.9)
        net(torch.ones(1, 2)).sum().backward()
        optimizer.step()  # a momentum buffer exists
        seen = []
        for epoch in range(5):
            new = schedule.step(
                epoch, optimizer, lambda lr: torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
            )
            seen.append((new.param_groups[0]["lr"], new is optimizer))
            optimizer = new
        lrs[restart] = seen
    assert [lr for lr, _ in lrs[True]] == pytest.approx([1, 1, 0.2, 0.04, 0.04])
    assert [lr for lr, _ in lrs[False]] == pytest.approx([1, 1, 0.2, 0.04, 0.04])
    assert [same for _, same in lrs[True]] == [True, True, False, False, True]  # fresh at decays
    assert all(same for _, same in lrs[False])  # MultiStepLR-like: one optimizer throughout


def test_always_ops_come_first_then_one_drawn_op_per_sample():
    from cmidd.augment import DSA

    dsa = DSA(strategy=["crop", "scale", "rotate"], always=["flip", "color"])
    draws = [dsa.draw(8, (8, 8), torch.Generator().manual_seed(s)) for s in range(20)]
    assert all([step["op"] for step in d["steps"][:2]] == ["flip", "color"] for d in draws)
    assert {d["steps"][2]["op"] for d in draws} == {"crop", "scale", "rotate"}
    assert all(d["steps"][0]["flip"].shape == (8,) for d in draws)  # per sample
    with pytest.raises(ValueError, match="augment.always"):
        DSA(always=["blur"])


def test_the_idc_protocol_evaluates_and_is_deterministic(tiny, tmp_path):
    distill(
        tiny(
            "iterations=1",
            "method=idc",
            "method.algorithm.inner_loop=1",
            "method.algorithm.n_data=16",
            "cmi=none",
        ),
        tmp_path / "run",
    )
    path = tmp_path / "run" / "synthetic.pt"
    runs = [
        evaluate(
            tiny(
                "task=evaluate", f"synthetic={path}", "eval=idc", "eval.epochs=6", "eval.models=2"
            ),
            tmp_path / f"eval{k}",
        )["accuracy"]["convnet"]
        for k in range(2)
    ]
    assert runs[0] == runs[1] and 0 < runs[0]["mean"] <= 1


def test_soft_labels_are_saved_checked_and_trained_on(tiny, tmp_path):
    import torch.nn.functional as F

    from cmidd.synthetic import SyntheticSet

    distill(tiny("iterations=1"), tmp_path / "run")
    hard = SyntheticSet.load(tmp_path / "run" / "synthetic.pt")
    state = torch.load(tmp_path / "run" / "synthetic.pt", weights_only=True)
    for name, targets in [
        ("onehot", F.one_hot(state["labels"], 10).float()),
        ("smooth", torch.full((100, 10), 0.1)),
    ]:
        soft = SyntheticSet(hard.images, hard.labels, hard.mean, hard.std, targets=targets)
        soft.save(tmp_path / f"{name}.pt", **hard.meta)
        assert torch.equal(SyntheticSet.load(tmp_path / f"{name}.pt").targets, targets)
    results = {
        name: evaluate(
            tiny(
                "task=evaluate",
                f"synthetic={tmp_path / name}.pt",
                "eval.epochs=40",
                "eval.nets.convnet.width=16",
            ),
            tmp_path / f"eval_{name}",
        )
        for name in ("run/synthetic", "onehot", "smooth")
    }
    # One-hot soft labels train exactly as the hard labels; uniform ones teach nothing.
    hard_runs = results["run/synthetic"]["accuracy"]["convnet"]["runs"]
    assert results["onehot"]["accuracy"]["convnet"]["runs"] == pytest.approx(hard_runs, abs=1e-9)
    assert results["smooth"]["accuracy"]["convnet"]["mean"] < hard_runs[0] - 0.05
    bad = SyntheticSet(hard.images, hard.labels, hard.mean, hard.std, targets=torch.ones(100, 7))
    bad.save(tmp_path / "bad.pt", **hard.meta)
    with pytest.raises(UserError, match="soft labels over 7 classes"):
        evaluate(tiny("task=evaluate", f"synthetic={tmp_path / 'bad.pt'}"), tmp_path / "eval_bad")
