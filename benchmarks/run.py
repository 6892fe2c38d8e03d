"""cmidd's benchmarks: does CMI help, how fast does it converge, and what does it cost.

    python benchmarks/run.py                         # CPU scale on the CIFAR-10 copy (hours)
    python benchmarks/run.py --quick                 # the same pipeline on tiny digits (< 1 min)
    python benchmarks/run.py --only cost,memory      # some sections
    python benchmarks/run.py --jobs 8                # distillation runs 8 at a time (joblib)
    python benchmarks/run.py --only cost --methods mtt -- cmi.weight=0.3   # other methods
    python benchmarks/run.py -- dataset.loader.archive=/data/cifar10-jpg.tar.gz  # config overrides

Sections: accuracy (base vs base+CMI per method over seeds, the random-real floor, the accuracy
kept with cmi.every, and convergence from the accuracy curves), cost (seconds per iteration,
side by side, as ratios), evaluation (one evaluation, sequential vs vectorized networks) and
memory (the CMI term, whole set vs per class), mtt_memory (one MTT iteration by the number
of unrolled student steps), storage (DM with the real images in memory, on disk or
streamed: time per iteration side by side, peak resident memory) and speed (DM+CMI and DSA+CMI
iterations, one evaluation network and one proxy-training epoch with compute.micro_batch=0 and
auto, alternating), speed_options (the same workloads in float32 against channels_last, bf16
and torch.compile: GPU options, skipped on a CPU unless --quick), fuse (the same workloads with
compute.fuse and compute.compile=inductor against the plain path; skipped with --quick). Writes
<out>/benchmarks.json and <out>/summary.md; distillation runs go to <out>/runs/.
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from data_cost import storage_cost
from hydra import compose, initialize_config_dir
from measure import ROOT, cmi_memory, evaluation_cost, fusion_speedup, iteration_cost, mtt_memory
from specs import FULL, QUICK
from speed import fuse_speed, speed, speed_options
from summary import accuracy_tables, write_summary

SECTIONS = (
    "accuracy",
    "cost",
    "paper_step",
    "evaluation",
    "memory",
    "mtt_memory",
    "storage",
    "speed",
    "speed_options",
    "fuse",
)


def _method_overrides(settings: dict, method: str) -> list:
    # DM has no `loops`: the quick settings add it only where the method has it.
    return [o for o in settings["overrides"] if method != "dm" or "loops" not in o]


def _launch(out: Path, overrides: list, jobs: int) -> None:
    """One Hydra multirun of launch.py; a failed job is recorded by the report, not fatal."""
    parallel = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    command = [
        sys.executable,
        "launch.py",
        "-m",
        "logger=none",
        *overrides,
        f"hydra.sweep.dir={out}",
        *parallel,
    ]
    print("+", " ".join(command[1:]), flush=True)
    subprocess.run(command, cwd=ROOT, check=False)


def run_accuracy(settings: dict, out: Path, jobs: int) -> dict:
    seeds = ",".join(map(str, settings["seeds"]))
    for method in settings["methods"]:
        common = [*_method_overrides(settings, method), f"method={method}", f"seed={seeds}"]
        # The base runs' curve starts at iteration 0, the random real images they start from: the
        # "Random" row of the paper's Table 1.
        _launch(out / method, [*common, "cmi=none,feature"], jobs)
        if method in settings["every_methods"]:
            every = f"cmi.every={settings['every']}"
            _launch(out / f"{method}_every", [*common, "cmi=feature", every], jobs)
    return accuracy_tables(out, settings["methods"])


def run_cost(settings: dict, compose_fn) -> dict:
    return {
        method: iteration_cost(
            compose_fn,
            [*_method_overrides(settings, method), f"method={method}"],
            settings["cost_iterations"][method],
            settings["every"],
        )
        for method in settings["methods"]
    }


def run_paper_step(settings: dict, compose_fn, device: str) -> dict:
    step = settings["paper_step"]
    return fusion_speedup(
        compose_fn,
        [*step["overrides"], f"device={device}", "logger=none", *settings["extra"]],
        step["iterations"],
    )


def run_evaluation(settings: dict, compose_fn) -> dict:
    common = [*_method_overrides(settings, "dm"), "method=dm"]
    result = {"protocol": evaluation_cost(compose_fn, common, settings["eval_epochs"])}
    if not settings["paper_eval"]:
        return result
    # The paper's protocol: 5 ConvNet-128s, 1000 epochs (extrapolated from the short timings).
    paper = [*common, "eval.models=5", "eval.epochs=1000", "eval.nets.convnet.width=128"]
    result["paper_protocol"] = evaluation_cost(compose_fn, paper, settings["eval_epochs"])
    return result


def run_memory(settings: dict, compose_fn, device: str) -> dict:
    cfg = compose_fn([*_method_overrides(settings, "dm"), "method=dm"])
    from omegaconf import OmegaConf

    net = OmegaConf.to_container(cfg.proxy.net, resolve=True)
    return cmi_memory(net, device=device, **settings["memory"])


def run_mtt_memory(settings: dict, compose_fn, device: str) -> dict:
    spec = dict(settings["mtt_memory"])
    cfg = compose_fn([f"expert.net.width={spec.pop('width')}"])
    from omegaconf import OmegaConf

    net = OmegaConf.to_container(cfg.expert.net, resolve=True)
    net["depth"] = 3  # 32x32 images, whatever the composed dataset
    return mtt_memory(net, device=device, **spec)


def run_storage(settings: dict, compose_fn) -> dict:
    if settings["storage_iterations"] is None:
        return {"skipped": "the quick settings' digits are held in memory only"}
    overrides = _method_overrides(settings, "dm")
    return storage_cost(compose_fn, overrides, settings["storage_iterations"])


def run_speed_options(settings: dict, compose_fn, device: str, extra: list) -> dict:
    spec = settings["speed_options"]
    if device == "cpu" and not spec["cpu"]:
        return {"skipped": "GPU options: run with --device cuda (on a CPU, docs/speed.md)"}
    common = [f"device={device}", "logger=none", *extra]
    return speed_options(compose_fn, spec, common)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny digits settings, < 1 minute")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--out", type=Path, default=None, help="output directory")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="distillation runs in parallel (Hydra's joblib launcher)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods for accuracy and cost (default: dm,dsa)",
    )
    parser.add_argument("extra", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args(argv)
    sections = args.only.split(",")
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"--only={args.only}: unknown section(s) {sorted(unknown)}; known: {SECTIONS}")
    settings = QUICK if args.quick else FULL
    if args.methods:
        settings = {**settings, "methods": args.methods.split(",")}
    settings = {
        **settings,
        "overrides": [*settings["overrides"], f"device={args.device}", "logger=none", *args.extra],
        "extra": args.extra,
    }
    out = args.out or ROOT / "benchmarks" / "out" / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "command": " ".join(["python benchmarks/run.py", *(argv or sys.argv[1:])]),
        "machine": {
            "platform": platform.platform(),
            "cpus": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": torch.cuda.get_device_name()
            if torch.cuda.is_available() and args.device != "cpu"
            else "cpu",
        },
        "settings": {k: v for k, v in settings.items()},
        "sections": {},
    }
    device = (
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):

        def compose_fn(overrides):
            return compose(config_name="config", overrides=list(overrides))

        for section in sections:
            tic = time.perf_counter()
            if section == "accuracy":
                result = run_accuracy(settings, out / "runs", args.jobs)
            elif section == "cost":
                result = run_cost(settings, compose_fn)
            elif section == "paper_step":
                result = run_paper_step(settings, compose_fn, args.device)
            elif section == "evaluation":
                result = run_evaluation(settings, compose_fn)
            elif section == "memory":
                result = run_memory(settings, compose_fn, device)
            elif section == "speed":
                common = [f"device={args.device}", "logger=none", *args.extra]
                result = speed(compose_fn, settings["speed"], common)
            elif section == "speed_options":
                result = run_speed_options(settings, compose_fn, device, args.extra)
            elif section == "fuse":
                common = [f"device={args.device}", "logger=none", *args.extra]
                result = fuse_speed(compose_fn, settings.get("fuse"), common)
            elif section == "mtt_memory":
                result = run_mtt_memory(settings, compose_fn, device)
            elif section == "storage":
                result = run_storage(settings, compose_fn)
            report["sections"][section] = {**result, "seconds": time.perf_counter() - tic}
            # Written after every section: a later failure never loses what is measured.
            (out / "benchmarks.json").write_text(json.dumps(report, indent=2, default=str))
    write_summary(report, out / "summary.md")
    print(f"wrote {out / 'benchmarks.json'} and {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
