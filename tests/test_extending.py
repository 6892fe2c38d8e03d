"""docs/configuration.md's "Adding a method, a plug-in or a dataset" is true: a method and a
plug-in that live outside the repository (a module on the Python path, a config directory on
Hydra's search path, nothing else) run end to end, alone, together, and in sweep=table1 with its
report."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, compose_config

from cmidd.tasks import distill

# A method: each class's mean pixel pulled to the mean of a real batch (the plug-in may choose it).
MODULE = '''
import torch

from cmidd.errors import check_number
from cmidd.methods.base import Method
from cmidd.plugins.base import Plugin
from cmidd.runtime import generator


class MeanMatch(Method):
    def __init__(self, real, seed, device, batch_real):
        self.real = real
        self.batch_real = check_number("method.algorithm.batch_real", batch_real, 1, integer=True)
        self.sampler = generator(seed, "mean_match/real")

    def losses(self, synthetic, iteration):
        images, labels = synthetic.decoded()
        loss = 0.0
        for c in range(self.real.num_classes):
            real = self.plugin.real_batch(c, self.real, None, self.batch_real)
            if real is None:
                real = self.real.sample(c, self.batch_real, self.sampler)
            loss = loss + (real.mean(0) - images[labels == c].mean(0)).pow(2).sum()
        yield loss

    def state_dict(self):
        return {"sampler": self.sampler.get_state()}

    def load_state_dict(self, state):
        self.sampler.set_state(state["sampler"])


class FirstImages(Plugin):
    """Matches and starts from the first images of each class instead of random ones."""

    name = "first_images"

    def real_batch(self, c, real, net, n):
        return real.train[c][:n]

    def initial_images(self, c, real, n):
        return real.train[c][:n]
'''

METHOD = """
defaults:
  - /base/method@_here_
  - _self_

name: mean_match
iterations: 20
optimizer:
  _target_: torch.optim.SGD
  _partial_: true
  lr: 1.0
algorithm:
  _target_: toy_distill.MeanMatch
  batch_real: 16
cmi_weights:
  convnet:
    digits: {10: 10000}
"""

# Hydra's way to put a package's configs on every search path, globs (sweep=table1) included.
SEARCH_PATH_PLUGIN = """
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class ToyDistillConf(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append("toy_distill", f"file://{Path(__file__).parents[2] / 'conf'}")
"""

PLUGIN = """
name: first_images
methods: [mean_match, dm]
technique:
  _target_: toy_distill.FirstImages
  _partial_: true
"""

# The run at tiny scale; no key of a built-in method's own.
TINY = [
    "logger=none",
    "device=cpu",
    "iterations=3",
    "eval.models=1",
    "eval.epochs=2",
    "eval.every=0",
    "eval.nets.convnet.width=8",
    "proxy.net.width=8",
    "proxy.pool_size=2",
    "proxy.recipe.epochs=1",
]


@pytest.fixture
def extension(tmp_path, monkeypatch):
    """The module and the two config files, outside the repository: what the docs list."""
    root = tmp_path / "ext"
    (root / "conf" / "method").mkdir(parents=True)
    (root / "conf" / "plugin").mkdir()
    (root / "toy_distill.py").write_text(textwrap.dedent(MODULE))
    (root / "conf" / "method" / "mean_match.yaml").write_text(METHOD)
    (root / "conf" / "plugin" / "first_images.yaml").write_text(PLUGIN)
    (root / "hydra_plugins" / "toy_distill_conf").mkdir(parents=True)
    (root / "hydra_plugins" / "toy_distill_conf" / "__init__.py").write_text(SEARCH_PATH_PLUGIN)
    monkeypatch.syspath_prepend(str(root))
    return root


def _compose(extension, cache, *overrides):
    return compose_config(
        [f"hydra.searchpath=[file://{extension / 'conf'}]", *TINY, *overrides], cache_dir=cache
    )


def test_a_method_and_a_plugin_from_outside_run_alone_and_together(extension, tmp_path):
    cache = tmp_path / "cache"
    results = {}
    for name, overrides in {
        "alone": ["method=mean_match"],
        "no_cmi": ["method=mean_match", "cmi.weight=0"],
        "plugin": ["method=mean_match", "plugin=first_images"],
        "on_dm": ["method=dm", "plugin=first_images", "method.algorithm.net.width=8"],
    }.items():
        results[name] = distill(_compose(extension, cache, *overrides), tmp_path / name)
    alone = results["alone"]
    assert alone["status"] == "finished" and alone["cmi"]["weight"] == 10000  # its table
    # The loop added CMI to its loss: the pool it optimized against sees less of it than
    # without the term, from the same start.
    assert alone["cmi"]["start_in_pool"] == results["no_cmi"]["cmi"]["start_in_pool"]
    assert alone["cmi"]["end_in_pool"] < results["no_cmi"]["cmi"]["end_in_pool"]
    # The plug-in's hooks reached the method: another start, other real batches.
    assert results["plugin"]["cmi"]["start"] != alone["cmi"]["start"]
    assert results["on_dm"]["status"] == "finished"


def test_a_method_from_outside_joins_table1_and_its_report(extension, tmp_path):
    env = {
        **os.environ,
        "CMIDD_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": os.pathsep.join([str(extension), os.environ.get("PYTHONPATH", "")]),
    }

    def launch(*overrides, sweep_dir):  # the configs found by the search-path plugin
        command = [sys.executable, "launch.py", "sweep=table1", "logger=none", *overrides]
        command.append(f"hydra.sweep.dir={sweep_dir}")
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)

    # Every method option is in the table, the new one too (the jobs stop at once on ipc=0).
    listed = launch("ipc=0", sweep_dir=tmp_path / "listed")
    assert (tmp_path / "listed" / "cmi=none,ipc=0,method=mean_match").is_dir(), listed.stderr
    assert not (tmp_path / "listed" / "cmi=none,ipc=0,method=sre2l").exists()

    ran = launch(*TINY, "method=mean_match,random", sweep_dir=tmp_path / "sweep")
    assert ran.returncode == 0, ran.stderr[-2000:]
    report = subprocess.run(
        [sys.executable, "-m", "cmidd.report", str(tmp_path / "sweep")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr
    table = (tmp_path / "sweep" / "report.md").read_text().split("## table1")[1]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.count("|") > 2}
    assert {"Random", "MEAN_MATCH", "MEAN_MATCH + CMI", "Δ"} <= set(rows)
    assert "Random + CMI" not in rows  # a selection's CMI jobs are skipped, not shown
    assert "missing" not in rows["MEAN_MATCH + CMI"]
    (finished,) = (tmp_path / "sweep").glob("cmi=feature,*method=mean_match*/seed=0/results.json")
    assert json.loads(finished.read_text())["status"] == "finished"
