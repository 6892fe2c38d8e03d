"""The real config composes for every option, and the paper tables resolve or fail loudly."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONF, ROOT, compose_config
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cmidd.config import check_entries, missing_entry
from cmidd.errors import UserError
from cmidd.tasks import distill

GROUPS = ["task", "dataset", "method", "proxy", "cmi", "eval", "logger", "experiment", "augment"]
TOP_LEVEL = {"task", "dataset", "method", "proxy", "cmi", "eval", "logger", "experiment"}


def options(group):
    return sorted(p.stem for p in (Path(CONF) / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in sorted(TOP_LEVEL) for o in options(g)])
def test_every_option_composes_and_resolves(group, option):
    # cmi.weight is pinned so that the table lookup (tested below) does not mask other errors.
    cfg = compose_config([f"{group}={option}", "cmi.weight=1.0"])
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert container["ipc"] == 10 and isinstance(container["ipc"], int)


@pytest.mark.parametrize("option", options("net"))
def test_every_network_option_builds_with_embed_and_forward(option):
    cfg = compose_config([f"net@method.algorithm.net={option}", "cmi.weight=1.0"])
    make = instantiate(cfg.method.algorithm.net)
    net = make(in_channels=3, num_classes=10, image_size=32)
    x = torch.randn(2, 3, 32, 32)
    assert net.embed(x).shape == (2, net.feature_dim)
    assert net(x).shape == (2, 10)


@pytest.mark.parametrize("option", options("augment"))
def test_every_augment_option_builds(option):
    augment = instantiate(OmegaConf.load(Path(CONF) / "augment" / f"{option}.yaml"))
    x = torch.randn(4, 3, 8, 8)
    assert augment(x, torch.Generator().manual_seed(0)).shape == x.shape


PAPER_DM = {
    ("svhn", 10): 18000,
    ("svhn", 50): 500,
    ("cifar10", 10): 8000,
    ("cifar10", 50): 2000,
    ("cifar100", 10): 2000,
    ("cifar100", 50): 500,
}


@pytest.mark.parametrize("dataset,ipc", sorted(PAPER_DM))
def test_paper_weight_table_resolves(dataset, ipc):
    cfg = compose_config([f"dataset={dataset}", f"ipc={ipc}", "proxy=resnet18"])
    assert cfg.cmi.weight == PAPER_DM[dataset, ipc]


def test_a_missing_table_entry_is_its_reason_never_a_default(tmp_path):
    cfg = compose_config(["dataset=cifar10", "ipc=20", "proxy=resnet18"])
    assert re.search(r"cifar10, 20\].*cmi.weight", missing_entry(cfg.cmi.weight))
    # A ResNet-18 weight is never carried over to another proxy silently.
    cfg = compose_config(["dataset=cifar10", "ipc=10", "proxy=alexnet"])
    assert "alexnet" in missing_entry(cfg.cmi.weight)
    # Where a key is used, its missing entry is one line naming it (cmi.weight: auto, below).
    with pytest.raises(UserError, match=r"method.optimizer.lr has no value: .*\[cifar10, 20\]"):
        check_entries(compose_config(["method=idc", "dataset=cifar10", "ipc=20"]).method, "method")


def test_a_missing_weight_is_set_by_auto_said_once_and_recorded(tiny, tmp_path, caplog):
    results = distill(tiny("ipc=20", "proxy=resnet18"), tmp_path)
    fallback = "method.cmi_weights has no entry for [resnet18, digits, 20]"
    assert results["cmi"]["weight_fallback"] == fallback
    assert results["cmi"]["weight"] > 0  # auto's choice
    assert [r.message for r in caplog.records if fallback in r.message] == [
        f"cmi.weight: {fallback}, so cmi.weight=auto sets it"
    ]


def test_cfg_job_resolve_prints_a_config_whose_lookups_fail(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "dataset=tinyimagenet",
            "method=idc",
            "ipc=20",
            "--cfg",
            "job",
            "--resolve",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    printed = OmegaConf.create(done.stdout)
    assert "no entry for [tinyimagenet, 20]" in printed.method.optimizer.lr


def test_explicit_weight_and_none_need_no_table():
    assert compose_config(["dataset=cifar10", "ipc=20", "cmi.weight=300"]).cmi.weight == 300
    assert compose_config(["dataset=cifar10", "ipc=20", "cmi=none"]).cmi.weight == 0


def test_typo_in_an_option_fails_with_hydras_message():
    with pytest.raises(MissingConfigException, match="cifar"):
        compose_config(["dataset=cifar"])


def test_paper_experiment_keeps_the_papers_settings():
    cfg = compose_config(["experiment=paper", "dataset=cifar10"])
    assert cfg.iterations == 20000 and cfg.eval.epochs == 1000 and cfg.proxy.name == "resnet18"
    assert cfg.method.optimizer.lr == 1.0 and cfg.method.algorithm.batch_real == 256
    assert cfg.method.algorithm.net.width == 128 and cfg.cmi.weight == 8000
    assert cfg.proxy.recipe == {
        "epochs": 40,
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.001,
        "batch_size": 256,
    }


def test_no_group_option_is_named_like_a_yaml_boolean():
    for group in GROUPS + ["net"]:
        assert not {"on", "off", "yes", "no", "true", "false"} & set(options(group)), group


@pytest.mark.parametrize(
    "method,iterations,weight",
    [("dm", 600, 300), ("dsa", 40, "auto"), ("idc", 20, "auto"), ("idm", 200, "auto")],
)
def test_cpu_cifar10_preset_scales_down_and_sets_its_own_weights(method, iterations, weight):
    cfg = compose_config(["experiment=cpu_cifar10", f"method={method}"])
    assert cfg.dataset.name == "cifar10_jpg" and cfg.iterations == iterations
    assert cfg.cmi.weight == weight and cfg.proxy.net.width == 32
    assert cfg.method.algorithm.net.width == 32 and cfg.eval.nets.convnet.width == 32
    assert cfg.method.algorithm.batch_real == 64 and cfg.eval.models == 3


def test_cpu_cifar10_preset_without_a_weight_for_the_method_has_none():
    weight = compose_config(["experiment=cpu_cifar10", "method=dc"]).cmi.weight
    assert "no entry for [convnet, cifar10, 10]" in missing_entry(weight)
    cfg = compose_config(["experiment=cpu_cifar10", "method=dc", "cmi.weight=5"])
    assert OmegaConf.to_container(cfg, resolve=True)["cmi"]["weight"] == 5


def test_cfg_job_resolve_shows_the_weight_the_pool_identity_and_the_sizes(tmp_path):
    import subprocess
    import sys

    import yaml
    from conftest import ROOT

    done = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "--cfg",
            "job",
            "--resolve",
            "experiment=cpu_cifar10",
            "method=dsa",
            f"cache_dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    cfg = yaml.safe_load(done.stdout)
    assert cfg["cmi"]["weight"] == "auto" and cfg["iterations"] == 40
    assert cfg["method"]["algorithm"]["batch_real"] == 64 and cfg["proxy"]["pool_size"] == 4
    assert cfg["method"]["algorithm"]["loops"] == [10, 50] and cfg["eval"]["epochs"] == 300
    key = cfg["proxy"]["cache_key"]
    assert key["loader"]["name"] == "cifar10_jpg" and "root" not in key["loader"]
    assert key["net"]["width"] == 32 and key["recipe"]["epochs"] == 5 and key["seed"] == 0


def test_every_method_of_a_preset_has_its_own_settings_file():
    # cpu_cifar10 leaves iterations to each method's file (coresets do not iterate); SRe2L keeps
    # its CIFAR recovery's 1000 iterations, and its file swaps the students instead.
    for method in options("method"):
        cfg = compose_config(["experiment=cpu_cifar10", f"method={method}", "cmi.weight=1"])
        if method == "sre2l":
            assert "resnet18" not in instantiate(cfg.eval).nets
            continue
        assert cfg.iterations < cfg.method.iterations or cfg.method.iterations == 0, method


def test_the_cpu_preset_of_sre2l_swaps_the_teacher_and_the_students():
    # eval=kd's resnet18 student (and the base preset's convnet width) are left out by null.
    cfg = compose_config(["experiment=cpu_cifar10", "method=sre2l", "cmi.weight=1"])
    evaluator = instantiate(cfg.eval)
    assert list(evaluator.nets) == ["convnet_bn"] and evaluator.models == 3
    student = evaluator.nets["convnet_bn"](in_channels=3, num_classes=10, image_size=32)
    assert student.features[0].out_channels == 32
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in student.modules())
    assert cfg.teacher.name == "convnet_bn" and cfg.teacher.net.norm == "batch"


@pytest.mark.parametrize(
    ("method", "fuse"), [("dm", "auto"), ("dsa", False), ("idm", False), ("mtt", False)]
)
def test_the_cpu_preset_compiles_the_distillation_path_only_where_it_measured_faster(method, fuse):
    # DM + CMI 1.47x; DSA + CMI 1.00x; the others unmeasured (BENCHMARKS.md, "Speed work").
    cfg = compose_config(["experiment=cpu_cifar10", f"method={method}"])
    assert cfg.compute.fuse == fuse and cfg.compute.compile == "auto"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_methods_algorithm_takes_the_keys_its_preset_gives_it(experiment):
    # A preset key meant for some methods (a net width, say) must not reach a method that has
    # no such argument: that fails only when the run builds the method, after the data loaded.
    import inspect

    from hydra.utils import get_class

    for method in options("method"):
        cfg = compose_config([f"experiment={experiment}", f"method={method}", "cmi.weight=1"])
        algorithm = OmegaConf.to_container(cfg.method.algorithm)
        signature = inspect.signature(get_class(algorithm.pop("_target_")))
        algorithm.pop("_partial_", None)
        algorithm.pop("_recursive_", None)
        needs = {k: None for k in cfg.method.get("needs", [])}
        runtime = {"real": None, "seed": 0, "device": None, **needs}
        signature.bind(**runtime, **algorithm)  # TypeError names the stray key


def test_run_directories_leave_out_the_keys_that_only_steer_how_a_run_is_done():
    """Hydra needs exclude_keys spelled out; they must name every key that cmidd.neutral.HOW
    covers (the report and resume read HOW as prefixes), so that a new compute.* or logger.*
    key cannot name run directories."""
    from cmidd.neutral import HOW

    leaves = [key for key, _ in _leaves(OmegaConf.to_container(compose_config()))]
    how = {k for k in leaves if k.startswith(HOW) and not k.split(".")[-1].startswith("_")}
    how |= {p for p in HOW if not p.endswith(".")}  # group choices: logger=none
    assert {"compute.micro_batch", "checkpoint.every", "logger.group", "device"} <= how
    excluded = OmegaConf.load(Path(CONF) / "config.yaml").hydra.job.config.override_dirname
    assert how | {"seed", "sweep"} <= set(excluded.exclude_keys)


def _leaves(node, prefix=""):
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@pytest.mark.parametrize("option", sorted(set(options("proxy")) - {"teacher"}))
def test_every_proxy_builds_at_the_cpu_presets_width(option):
    """experiment=cpu_cifar10 narrows every proxy to width 32 (the transfer tests of cmi.weight=auto
    use AlexNet and ResNet-18 pools at that scale); the reference widths stay the default.
    proxy=teacher is the teacher itself, whatever its width."""
    cfg = compose_config(["experiment=cpu_cifar10", f"proxy={option}", "cmi.weight=1.0"])
    assert cfg.proxy.net.width == 32
    narrow = instantiate(cfg.proxy.net)(in_channels=3, num_classes=10, image_size=32)
    full = instantiate(compose_config([f"proxy={option}"]).proxy.net)
    full = full(in_channels=3, num_classes=10, image_size=32)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(narrow) < count(full) / 3  # half the width or less: about a quarter
    assert narrow(torch.randn(2, 3, 32, 32)).shape == (2, 10)
