"""The cost of ``dataset.storage``: DM's seconds per iteration with the real images in memory,
memory-mapped on disk and streamed from their files (the loops stepped in turn in one process),
and each one's peak resident memory for a whole run of ``iterations`` (each in a fresh process:
load, build, iterate)."""

import json
import subprocess
import sys

from hydra import compose, initialize_config_dir
from measure import ROOT, _peak_resident_bytes, alternate, timing_loop

from cmidd.components import components

STORAGES = ("memory", "disk", "stream")


def storage_cost(compose_fn, overrides: list, iterations: int) -> dict:
    configs = {s: [*overrides, "method=dm", f"dataset.storage={s}"] for s in STORAGES}
    parts = {s: components(compose_fn(configs[s])) for s in STORAGES}  # decodes the disk cache
    mean = alternate(
        {s: timing_loop(p) for s, p in parts.items()}, iterations, parts["disk"].device
    )
    del parts
    peak = {s: _child_peak_mib(configs[s], iterations) for s in STORAGES}
    cost = {
        "seconds_per_iteration": mean,
        "iterations_timed": iterations,
        "peak_resident_mib": peak,
    }
    for s in STORAGES[1:]:
        cost[f"ratio_{s}_to_memory"] = mean[s] / mean["memory"]
        cost[f"ratio_peak_{s}_to_memory"] = peak[s] / peak["memory"]
    return cost


def _child_peak_mib(overrides: list, iterations: int) -> float:
    spec = json.dumps({"overrides": overrides, "iterations": iterations})
    done = subprocess.run(
        [sys.executable, __file__, spec], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"] / 2**20


def _child(spec: dict) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        loop = timing_loop(components(compose(config_name="config", overrides=spec["overrides"])))
    for it in range(spec["iterations"]):
        loop._step(it)
    return {"peak_bytes": _peak_resident_bytes()}


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.argv[1]))))
