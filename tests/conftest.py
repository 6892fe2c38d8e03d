"""Shared fixtures: the real Hydra config composed with tiny overrides, and a throwaway cache."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import cmidd  # noqa: F401  (registers the config resolvers)

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
CIFAR_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"

# A distillation that takes seconds on the CPU: narrow nets, few iterations, short evaluation
# (the one run: the demo's main job, task=compare, would add the run without CMI).
TINY = [
    "task=distill",
    "logger=none",
    "device=cpu",
    "iterations=3",
    "log_every=1",
    "eval.models=1",
    "eval.epochs=2",
    "eval.every=0",
    "method.algorithm.batch_real=16",
    "method.algorithm.net.width=8",
    "eval.nets.convnet.width=8",
    "proxy.net.width=8",
    "proxy.pool_size=2",
    "proxy.recipe.epochs=1",
]

# MTT at tiny scale: 2 experts of width 8 trained for 4 epochs on first use, 3 student steps.
BASE = [o for o in TINY if not o.startswith("method.algorithm")]
MTT = [
    "method=mtt",
    "expert.net.width=8",
    "expert.count=2",
    "expert.recipe.epochs=4",
    "expert.recipe.batch_size=64",
    "expert.build_if_missing=true",
    "method.algorithm.syn_steps=3",
    "method.algorithm.max_start_epoch=3",
]


def compose_config(overrides=(), cache_dir=None):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        extra = [f"cache_dir={cache_dir}"] if cache_dir else []
        return compose(config_name="config", overrides=[*extra, *overrides])


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def tiny(cache):
    """compose(*overrides): the real config at tiny scale, with a private cache directory."""
    return lambda *overrides: compose_config([*TINY, *overrides], cache_dir=cache)


@pytest.fixture
def mtt(cache):
    """mtt(*overrides): method=mtt at tiny scale, with a private cache (experts built there)."""
    return lambda *overrides: compose_config([*BASE, *MTT, *overrides], cache_dir=cache)


@pytest.fixture
def app_error(tiny, tmp_path, capsys):
    """app_error(*overrides): run the launcher's app in-process at tiny scale, expecting it to
    stop; returns its exit status and the last line it wrote to stderr."""
    from cmidd import app

    def run(*overrides, out_dir=None):
        with pytest.raises(SystemExit) as stop:
            app.run(tiny(*overrides), out_dir or tmp_path / "run")
        lines = capsys.readouterr().err.strip().splitlines()
        return stop.value.code, lines[-1] if lines else ""

    return run
