"""Networks trained on the real data and cached for later runs, one kind per config group:

- ``proxy``: the proxy pool whose outputs the CMI term reads (``task=pretrain``);
- ``expert``: the expert trajectories of trajectory matching (``task=buffer``);
- ``teacher``: SRe2L's BatchNorm teacher (``task=teacher``, or ``teacher.weights=<file>``).

A task asks for a kind by name: ``get(kind, cfg, real, device)`` returns the run's object (a
``ProxyPool``, ``Trajectories``), built first when missing if ``<group>.build_if_missing``;
``build(kind, ...)`` trains what is missing and returns the items' metadata; ``location`` is the
cache directory, named by the group's ``cache_key`` (``--cfg job --resolve`` shows it) and the
loaded data's facts. A new kind is a module with a ``Kind`` and one line below.
"""

from .. import batching
from . import experts, proxies, teachers
from .kind import Kind
from .proxies import ProxyPool, random_pool
from .store import StoreError

KINDS = {"proxy": proxies.KIND, "expert": experts.KIND, "teacher": teachers.KIND}


def kind(name: str) -> Kind:
    return KINDS[name]


# Pre-trained networks are trained and tested in float32 whatever the run's precision: their
# caches are shared by runs of both precisions.
def get(name: str, cfg, real, device):
    with batching.settings(precision=32):
        return KINDS[name].get(cfg, real, device)


def build(name: str, cfg, real, device) -> list:
    with batching.settings(precision=32):
        return KINDS[name].build(cfg, real, device)


def location(name: str, cfg, real):
    return KINDS[name].location(cfg, real)


__all__ = [
    "KINDS",
    "Kind",
    "ProxyPool",
    "StoreError",
    "build",
    "get",
    "kind",
    "location",
    "random_pool",
]
