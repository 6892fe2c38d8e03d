"""Reading the benchmark's distillation runs, and the Markdown summary of benchmarks.json."""

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cmidd.report.runs import read_sweep, summarize  # noqa: E402


def _group(directory: Path) -> list:
    """The runs under ``directory``; none when it is missing or a multirun died before any job."""
    try:
        return read_sweep(directory)
    except ValueError:
        return []


def _stats(runs: list) -> dict:
    s = summarize(runs) if runs else None
    if not s or s["mean"] is None:
        return {
            "n": len(runs),
            "done": 0,
            "mean": None,
            "std": None,
            "std_over": None,
            "weight": None,
            "cmi_end": None,
        }
    ends = [r.results["cmi"]["end"] for r in runs if r.ok and r.results["cmi"]["end"] is not None]
    return {
        "n": s["n"],
        "done": s["done"],
        "mean": s["mean"],
        "std": s["std_seeds"] if s["std_seeds"] is not None else s["std_networks"],
        "std_over": "seeds" if s["std_seeds"] is not None else "networks",
        "weight": next((r.get("cmi.weight") for r in runs if r.ok), None),
        "cmi_end": statistics.fmean(ends) if ends else None,
    }


def _start(runs: list) -> dict:
    """Accuracy at iteration 0 (the initial random real images), mean ± std over seeds."""
    starts = [
        p[next(k for k in p if k != "iteration")]
        for r in runs
        if r.ok
        for p in r.results["accuracy_curve"]
        if p["iteration"] == 0
    ]
    if not starts:
        return {"n": len(runs), "done": 0, "mean": None, "std": None}
    return {
        "n": len(runs),
        "done": len(starts),
        "mean": statistics.fmean(starts),
        "std": statistics.stdev(starts) if len(starts) > 1 else 0.0,
        "std_over": "seeds",
    }


def _mean_curve(runs: list) -> list:
    """(iteration, mean accuracy over seeds) at the iterations every finished run evaluated."""
    curves = [
        {
            p["iteration"]: next(v for k, v in p.items() if k != "iteration")
            for p in r.results["accuracy_curve"]
        }
        for r in runs
        if r.ok
    ]
    if not curves:
        return []
    shared = sorted(set.intersection(*(set(c) for c in curves)))
    return [(it, statistics.fmean(c[it] for c in curves)) for it in shared]


def convergence(base: list, cmi: list) -> dict:
    """The first iteration at which the CMI run's (seed-averaged) accuracy reaches the base run's
    final accuracy, as a fraction of the base run's iterations (None: never reached), over the
    seeds that finished in both groups."""
    seeds = {r.seed for r in base if r.ok} & {r.seed for r in cmi if r.ok}
    base_curve = _mean_curve([r for r in base if r.seed in seeds])
    cmi_curve = _mean_curve([r for r in cmi if r.seed in seeds])
    if not base_curve or not cmi_curve:
        return {"base_final": None, "reached_at": None, "fraction": None}
    last, final = base_curve[-1]
    reached = next((it for it, acc in cmi_curve if acc >= final), None)
    return {
        "base_final": final,
        "iterations": last,
        "reached_at": reached,
        "seeds": sorted(seeds),
        "fraction": None if reached is None or last == 0 else reached / last,
        "curves": {"base": base_curve, "cmi": cmi_curve},
    }


def accuracy_tables(out: Path, methods: list) -> dict:
    result = {}
    for method in methods:
        runs = _group(out / method)
        base = [r for r in runs if r.get("cmi.name") == "none"]
        cmi = [r for r in runs if r.get("cmi.name") != "none"]
        every = _group(out / f"{method}_every")
        result[method] = {
            "random": _start(base),
            "base": _stats(base),
            "cmi": _stats(cmi),
            "cmi_every": _stats(every),
            "every": next((r.get("cmi.every") for r in every if r.ok), None),
            "convergence": convergence(base, cmi),
            "failed": sorted({f"{r.path.name}: {r.status}" for r in runs + every if not r.ok}),
        }
    return result


def _pct(stats: dict) -> str:
    if not stats or stats.get("mean") is None:
        return "missing"
    text = f"{100 * stats['mean']:.2f} ± {100 * stats['std']:.2f}"
    return text if stats["done"] == stats["n"] else f"{text} ({stats['done']}/{stats['n']} ran)"


def _lines(report: dict) -> list:
    s = report["sections"]
    lines = [f"Command: `{report['command']}`", "", f"Machine: {report['machine']}", ""]
    if "accuracy" in s:
        lines += [
            "## Accuracy (first evaluation architecture, % test accuracy, mean ± std)",
            "",
            "| method | random real | base | base + CMI | base + CMI every k | weight |",
            "|---|---|---|---|---|---|",
        ]
        for method, r in s["accuracy"].items():
            if method == "seconds":
                continue
            every = f"{_pct(r['cmi_every'])} (k={r['every']})" if r["every"] else "-"
            lines.append(
                f"| {method} | {_pct(r['random'])} | {_pct(r['base'])} | "
                f"{_pct(r['cmi'])} | {every} | {r['cmi'].get('weight')} |"
            )
        lines += [
            "",
            "## Convergence (seed-averaged curves)",
            "",
            "| method | base final | CMI reaches it at iteration | fraction of base iterations |",
            "|---|---|---|---|",
        ]
        for method, r in s["accuracy"].items():
            if method == "seconds":
                continue
            c = r["convergence"]
            if c.get("base_final") is None:
                lines.append(f"| {method} | missing | - | - |")
                continue
            reached = "not reached" if c["reached_at"] is None else str(c["reached_at"])
            fraction = "-" if c["fraction"] is None else f"{c['fraction']:.2f}"
            lines.append(f"| {method} | {100 * c['base_final']:.2f} | {reached} | {fraction} |")
    if "cost" in s:
        lines += [
            "",
            "## Cost per iteration (alternating, same process)",
            "",
            "| method | base s/it | base + CMI s/it | ratio | CMI every k: ratio "
            "| cmi.weight=auto vs fixed: ratio |",
            "|---|---|---|---|---|---|",
        ]
        for method, r in s["cost"].items():
            if method == "seconds":
                continue
            t = r["seconds_per_iteration"]
            every = next(k for k in r if k.startswith("ratio_cmi_every_"))
            lines.append(
                f"| {method} | {t['base']:.3f} | {t['cmi']:.3f} | {r['ratio_cmi']:.2f} | "
                f"k={every.rsplit('_', 1)[1]}: {r[every]:.2f} | {r['ratio_auto_to_cmi']:.2f} |"
            )
    if "paper_step" in s:
        r = s["paper_step"]
        t = r["seconds_per_iteration"]
        lines += [
            "",
            "## DM+CMI iteration at the paper's shape: classes embedded apart vs fused",
            "",
            "| before s/it | after s/it | speed-up |",
            "|---|---|---|",
            f"| {t['before']:.3f} | {t['after']:.3f} | {r['speedup']:.2f} |",
        ]
    if "evaluation" in s:
        lines += [
            "",
            "## One evaluation (extrapolated from two short timings)",
            "",
            "| protocol | nets x epochs | sequential s | vectorized s | speed-up |",
            "|---|---|---|---|---|",
        ]
        for name, r in s["evaluation"].items():
            if name == "seconds":
                continue
            lines.append(
                f"| {name} | {r['models']} x {r['epochs']} ({', '.join(r['architectures'])}) "
                f"| {r['sequential_seconds']:.1f} | {r['vectorized_seconds']:.1f} | "
                f"{r['speedup_vectorized']:.2f} |"
            )
    if "memory" in s:
        m = s["memory"]
        lines += [
            "",
            "## Memory of the CMI term (forward + backward)",
            "",
            "| synthetic set | device | whole set MiB | per class MiB | ratio |",
            "|---|---|---|---|---|",
            f"| {m['classes']} classes x {m['ipc']} | {m['device']} | {m['whole_mib']:.0f} | "
            f"{m['per_class_mib']:.0f} | {m['ratio_whole_to_per_class']:.1f} |",
        ]
    if "mtt_memory" in s:
        m = s["mtt_memory"]
        lines += [
            "",
            "## Memory of one MTT iteration by unrolled student steps",
            "",
            "| synthetic set | student | device | "
            + " | ".join(f"{n} steps MiB" for n in m["mib_by_steps"])
            + " | MiB per step |",
            "|---" * (4 + len(m["mib_by_steps"])) + "|",
            f"| {m['classes']} classes x {m['ipc']} | ConvNet-{m['net']['width']} "
            f"| {m['device']} | "
            + " | ".join(f"{v:.0f}" for v in m["mib_by_steps"].values())
            + f" | {m['mib_per_step']:.1f} |",
        ]
    if "storage" in s and "skipped" not in s["storage"]:
        r = s["storage"]
        t, peak = r["seconds_per_iteration"], r["peak_resident_mib"]
        lines += [
            "",
            "## DM with the real images in memory, on disk or streamed (dataset.storage)",
            "",
            "| storage | s/it | peak resident MiB |",
            "|---|---|---|",
            *(f"| {k} | {t[k]:.3f} | {peak[k]:.0f} |" for k in t),
            *(
                f"| {k} / memory | {r[f'ratio_{k}_to_memory']:.2f} | "
                f"{r[f'ratio_peak_{k}_to_memory']:.2f} |"
                for k in t
                if k != "memory"
            ),
        ]
    if "speed" in s:
        lines += [
            "",
            f"## Speed: compute.micro_batch=0 (before) and auto (after), {s['speed']['threads']} "
            "threads",
            "",
            "| workload | before s | after s | speed-up |",
            "|---|---|---|---|",
            *(
                f"| {name} | {r['seconds']['before']:.3f} | {r['seconds']['after']:.3f} | "
                f"{r['speedup']:.2f} |"
                for name, r in s["speed"].items()
                if isinstance(r, dict) and "speedup" in r
            ),
        ]
    if "speed_options" in s and "skipped" not in s["speed_options"]:
        lines += _options_lines(s["speed_options"])
    return lines


def _options_lines(section: dict) -> list:
    """Seconds and speed-ups over float32 of each workload under each GPU option."""
    rows = {name: r for name, r in section.items() if isinstance(r, dict) and "speedups" in r}
    names = list(dict.fromkeys(n for r in rows.values() for n in r["seconds"]))
    cell = "{:.3f} s ({:.2f}x)"
    return [
        "",
        f"## Speed options against float32 (compile backend: {section['compile']}), "
        f"{section['threads']} threads",
        "",
        "| workload | " + " | ".join(names) + " | accuracy float32 / bf16 |",
        "|---|" + "---|" * (len(names) + 1),
        *(
            f"| {w} | "
            + " | ".join(
                cell.format(r["seconds"][n], r["speedups"][n]) if n in r["seconds"] else "-"
                for n in names
            )
            + " | "
            + (
                f"{r['accuracy']['float32']:.4f} / {r['accuracy']['bf16']:.4f}"
                if "accuracy" in r
                else "-"
            )
            + " |"
            for w, r in rows.items()
        ),
    ]


def write_summary(report: dict, path: Path) -> None:
    path.write_text("\n".join(_lines(report)) + "\n")
