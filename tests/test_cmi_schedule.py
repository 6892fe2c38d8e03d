"""Where the CMI term enters each method's loop, as in the reference code: how many image
updates an iteration makes, how many of them carry the CMI term, and how many proxies are drawn."""

import pytest

from cmidd.cmi import CMITerm
from cmidd.tasks import components, distill

TINY_LOOPS = {
    "dm": [],
    "dc": ["method.algorithm.loops=[3,1]"],
    "dsa": ["method.algorithm.loops=[3,1]"],
    "idc": [
        "method.algorithm.inner_loop=3",
        "method.algorithm.n_data=16",
        "method.algorithm.batch_real=16",
    ],
    "idm": [
        "method.algorithm.batch_real=16",
        "method.algorithm.train_batch=32",
        "method.algorithm.train_steps=1",
    ],
}
# Per iteration: (image updates, CMI terms added, proxies drawn).
EXPECTED = {
    "dm": (1, 1, 1),
    "dc": (3, 3, 1),
    "dsa": (3, 3, 1),
    "idc": (3, 3, 3),
    "idm": (1, 1, 1),
    "mtt": (1, 1, 1),
}
ITERATIONS = 2


def count_per_iteration(cfg, tmp_path, monkeypatch):
    counts = {"update": 0, "cmi": 0, "draw": 0}
    real_call, real_draw = CMITerm.__call__, CMITerm.draw

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(CMITerm, "__call__", counted("cmi", real_call))
    monkeypatch.setattr(CMITerm, "draw", counted("draw", real_draw))

    def parts_with_counted_updates(cfg, real=None):
        parts = components(cfg, real)
        parts.optimizer.step = counted("update", parts.optimizer.step)
        return parts

    monkeypatch.setattr("cmidd.tasks.components", parts_with_counted_updates)
    distill(cfg, tmp_path)
    return tuple(counts[k] / ITERATIONS for k in ("update", "cmi", "draw"))


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_cmi_enters_where_the_reference_adds_it(method, tiny, mtt, tmp_path, monkeypatch):
    common = [f"iterations={ITERATIONS}", "cmi.weight=10"]
    if method == "mtt":
        cfg = mtt(*common)
    else:
        cfg = tiny(f"method={method}", *TINY_LOOPS[method], *common)
    assert count_per_iteration(cfg, tmp_path, monkeypatch) == EXPECTED[method]


def test_cmi_every_n_iterations_skips_the_others(tiny, tmp_path, monkeypatch):
    cfg = tiny(
        "method=dsa", *TINY_LOOPS["dsa"], f"iterations={ITERATIONS}", "cmi.weight=10", "cmi.every=2"
    )
    assert count_per_iteration(cfg, tmp_path, monkeypatch) == (3, 1.5, 0.5)
