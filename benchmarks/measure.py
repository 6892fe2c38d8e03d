"""In-process measurements for benchmarks/run.py: cost per iteration, evaluation cost, memory.

Every timing that is compared is measured side by side in one process, alternating, and
reported as a ratio: absolute seconds on a shared machine are noisy, ratios much less so.
"""

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cmidd.cmi import empirical_cmi, per_class_cmi  # noqa: E402
from cmidd.components import components  # noqa: E402
from cmidd.distill import Distillation  # noqa: E402
from cmidd.runtime import build_seeded, resolve_device  # noqa: E402
from cmidd.synthetic import SyntheticSet  # noqa: E402


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timing_loop(parts) -> Distillation:
    """A distillation loop without evaluation or logging, for timing its steps."""
    return Distillation(parts, 0, Path(tempfile.gettempdir()))


def alternate(loops: dict, iterations: int, device) -> dict:
    """Mean seconds per step of each loop, stepping them in turn on iterations 1..n and rotating
    who goes first; iteration 0 warms up (allocations, lazy initialization) untimed."""
    seconds, names = {name: [] for name in loops}, list(loops)
    for it in range(iterations + 1):
        for name in names[it % len(names) :] + names[: it % len(names)]:
            sync(device)
            tic = time.perf_counter()
            loops[name]._step(it)
            sync(device)
            if it > 0:
                seconds[name].append(time.perf_counter() - tic)
    return {name: statistics.fmean(s) for name, s in seconds.items()}


def iteration_cost(compose, overrides: list, iterations: int, every: int) -> dict:
    """Seconds per iteration of the base method, base+CMI, base+CMI every ``every``
    iterations (with n a multiple of ``every``, the CMI runs on n/every of the timed ones), and
    base+CMI with ``cmi.weight=auto`` tracked (its weight measured at every step)."""
    base = components(compose([*overrides, "cmi.weight=0"]))
    with_cmi = components(compose(overrides), real=base.real)
    sparse = components(compose([*overrides, f"cmi.every={every}"]), real=base.real)
    auto = components(
        compose([*overrides, "cmi.weight=auto", "cmi.auto.mode=track"]), real=base.real
    )
    loops = {
        "base": timing_loop(base),
        "cmi": timing_loop(with_cmi),
        f"cmi_every_{every}": timing_loop(sparse),
        "cmi_auto": timing_loop(auto),
    }
    mean = alternate(loops, iterations, base.device)
    return {
        "seconds_per_iteration": mean,
        "iterations_timed": iterations,
        "weight": "auto" if with_cmi.cmi.auto else with_cmi.cmi.weight,
        "ratio_cmi": mean["cmi"] / mean["base"],
        f"ratio_cmi_every_{every}": mean[f"cmi_every_{every}"] / mean["base"],
        "ratio_auto_to_cmi": mean["cmi_auto"] / mean["cmi"],
    }


def fusion_speedup(compose, overrides: list, iterations: int) -> dict:
    """DM+CMI seconds per iteration with the classes embedded one forward each (before) and in
    one forward (after, ``fuse_classes``), alternating; the two give the same loss."""
    before = components(compose([*overrides, "method.algorithm.fuse_classes=false"]))
    after = components(
        compose([*overrides, "method.algorithm.fuse_classes=true"]), real=before.real
    )
    mean = alternate(
        {"before": timing_loop(before), "after": timing_loop(after)}, iterations, before.device
    )
    return {
        "seconds_per_iteration": mean,
        "iterations_timed": iterations,
        "speedup": mean["before"] / mean["after"],
    }


def evaluation_cost(compose, overrides: list, epochs: tuple) -> dict:
    """Seconds to evaluate a random-real synthetic set with the config's protocol, trained one
    network after another and as one vectorized model. Each is timed at two epoch counts and
    extrapolated linearly to the protocol's epochs (training is linear in epochs; testing is
    the intercept)."""
    cfg = compose(overrides)
    parts = components(compose([*overrides, "cmi=none"]))
    images, labels = parts.synthetic.decoded()
    for vectorize in (False, True):  # untimed warm-up: allocator, cuDNN autotuning, vmap
        instantiate(cfg.eval, epochs=1, vectorize=vectorize)(images, labels, parts.real, cfg.seed)
    timings = {}
    for k, epoch_count in enumerate(epochs):
        for vectorize in (False, True) if k % 2 == 0 else (True, False):
            evaluator = instantiate(cfg.eval, epochs=epoch_count, vectorize=vectorize)
            sync(parts.device)
            tic = time.perf_counter()
            evaluator(images, labels, parts.real, cfg.seed)
            sync(parts.device)
            timings[(vectorize, epoch_count)] = time.perf_counter() - tic
    low, high = epochs
    out = {
        "models": cfg.eval.models,
        "epochs": cfg.eval.epochs,
        "architectures": list(cfg.eval.nets),
        "measured": {
            f"{'vectorized' if v else 'sequential'}@{e}": t for (v, e), t in timings.items()
        },
    }
    for vectorize, name in ((False, "sequential"), (True, "vectorized")):
        # A negative slope is noise swamping the per-epoch cost: the short timing is kept.
        slope = max(0.0, (timings[(vectorize, high)] - timings[(vectorize, low)]) / (high - low))
        out[f"{name}_seconds"] = timings[(vectorize, low)] + slope * (cfg.eval.epochs - low)
    out["speedup_vectorized"] = out["sequential_seconds"] / out["vectorized_seconds"]
    return out


def _memory_child(spec: dict) -> dict:
    """One CMI forward and backward (or only the set-up) in this process; its peak memory."""
    device = resolve_device(spec["device"])
    make = instantiate(spec["net"])
    proxy = (
        build_seeded(make, 0, "proxy", in_channels=3, num_classes=spec["classes"], image_size=32)
        .to(device)
        .requires_grad_(False)
    )
    n = spec["classes"] * spec["ipc"]
    images = torch.randn(n, 3, 32, 32, device=device, requires_grad=True)
    labels = torch.arange(spec["classes"], device=device).repeat_interleave(spec["ipc"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.max_memory_allocated(device)
    if spec["mode"] == "whole":
        empirical_cmi(proxy.embed(images), labels).backward()
    elif spec["mode"] == "per_class":
        per_class_cmi(proxy.embed, images, labels).backward()
    if device.type == "cuda":
        return {"peak_bytes": torch.cuda.max_memory_allocated(device) - start}
    return {"peak_bytes": _peak_resident_bytes()}


def _mtt_child(spec: dict) -> dict:
    """One MTT iteration (unrolled student, then the backward to the images and lr) with
    ``spec["steps"]`` student steps, or only the set-up with 0 steps; its peak memory."""
    from types import SimpleNamespace

    from cmidd.augment import DSA
    from cmidd.methods import MTT
    from cmidd.pretrained.experts import Trajectories, flat_parameters

    device = resolve_device(spec["device"])
    make = instantiate(spec["net"])
    net_args = dict(in_channels=3, num_classes=spec["classes"], image_size=32)
    real = SimpleNamespace(shape=(3, 32, 32), num_classes=spec["classes"], net_args=net_args)
    start = flat_parameters(build_seeded(make, 0, "expert", **net_args))
    trajectories = Trajectories(
        [torch.stack([start, start, start + 0.01 * torch.randn_like(start)])]
    )
    method = MTT(make, DSA(), real, 0, device, max(spec["steps"], 1), 2, 1)
    method.provide(expert=trajectories)
    labels = torch.arange(spec["classes"]).repeat_interleave(spec["ipc"])
    synthetic = SyntheticSet(
        torch.randn(len(labels), 3, 32, 32), labels, (0,) * 3, (1,) * 3, lr=0.01
    ).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.max_memory_allocated(device)
    if spec["steps"] > 0:
        next(method.losses(synthetic, 0)).backward()
    if device.type == "cuda":
        return {"peak_bytes": torch.cuda.max_memory_allocated(device) - base}
    return {"peak_bytes": _peak_resident_bytes()}


def _peak_resident_bytes() -> int:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec; ru_maxrss does
    not (a child of a large process would report the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child_peak(spec: dict) -> int:
    done = subprocess.run(
        [sys.executable, __file__, json.dumps(spec)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]


def mtt_memory(net: dict, classes: int, ipc: int, steps: list, device: str) -> dict:
    """Peak memory of one MTT iteration per number of unrolled student steps, each in a fresh
    process, the set-up subtracted on the CPU (as ``cmi_memory``)."""
    spec = {"kind": "mtt", "net": net, "classes": classes, "ipc": ipc, "device": device}
    setup = _child_peak({**spec, "steps": 0}) if device != "cuda" else 0
    mib = {n: max(_child_peak({**spec, "steps": n}) - setup, 0) / 2**20 for n in steps}
    return {
        "classes": classes,
        "ipc": ipc,
        "net": net,
        "device": device,
        "mib_by_steps": mib,
        "mib_per_step": (mib[steps[-1]] - mib[steps[0]]) / (steps[-1] - steps[0]),
    }


def cmi_memory(net: dict, classes: int, ipc: int, device: str) -> dict:
    """Peak memory of the CMI term (forward and backward) for ``classes`` x ``ipc`` synthetic
    32x32 images, over the whole set at once and class by class. On the CPU each mode runs in a
    fresh process and the set-up alone is subtracted (peak resident memory); on CUDA, the peak
    of allocated memory."""
    out = {"classes": classes, "ipc": ipc, "net": net, "device": device}
    for mode in ("setup", "whole", "per_class"):
        spec = json.dumps(
            {"net": net, "classes": classes, "ipc": ipc, "device": device, "mode": mode}
        )
        done = subprocess.run(
            [sys.executable, __file__, spec], capture_output=True, text=True, check=True, cwd=ROOT
        )
        out[f"{mode}_bytes"] = json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"]
    for mode in ("whole", "per_class"):
        cost = out[f"{mode}_bytes"] - (0 if device == "cuda" else out["setup_bytes"])
        out[f"{mode}_mib"] = max(cost, 0) / 2**20
    out["ratio_whole_to_per_class"] = out["whole_mib"] / max(out["per_class_mib"], 1e-9)
    return out


if __name__ == "__main__":
    child = json.loads(sys.argv[1])
    print(json.dumps((_mtt_child if child.get("kind") == "mtt" else _memory_child)(child)))
