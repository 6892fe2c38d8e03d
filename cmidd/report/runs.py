"""Reading a sweep directory: one record per job, finished, failed or missing."""

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..neutral import HOW


@dataclass
class Run:
    path: Path
    key: str  # the job's overrides without the seed: runs that differ by seed share it
    seed: int = None
    status: str = "missing"  # finished | failed: ... | missing: ...
    results: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "finished"

    @property
    def config(self) -> dict:
        return self.results.get("config", {})

    @property
    def with_cmi(self) -> bool:
        """Whether the run used the regularizer (a weight that is a string is ``auto`` or a
        CMI option's table entry left unresolved)."""
        weight = self.get("cmi.weight")
        return isinstance(weight, str) or bool(weight)

    @property
    def code(self):
        """The commit the run was made at (``+dirty`` with uncommitted changes), or None."""
        about = self.results.get("manifest") or {}
        commit = about.get("commit")
        return None if commit is None else commit[:10] + ("+dirty" if about.get("dirty") else "")

    @property
    def weight_used(self):
        """The CMI weight the run used: ``auto``'s choice, else the config's (older runs)."""
        return (self.results.get("cmi") or {}).get("weight", self.get("cmi.weight"))

    def get(self, dotted: str):
        node = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node


# Runs that differ only in these share a job key (seeds are aggregated over).
IGNORED = HOW + ("seed", "sweep", "study", "hydra.")  # study: set by sweep=..., ignored too


def _job_key(overrides: list) -> tuple:
    seed, kept = None, []
    for item in overrides:
        name, _, value = item.partition("=")
        if name == "seed":
            seed = int(value)
        elif not name.lstrip("+~").startswith(IGNORED):
            kept.append(item)
    return ",".join(sorted(kept)) or "defaults", seed


def _job_config(job: Path) -> dict:
    """The config Hydra saved for a job that left no results.json (resolved where possible)."""
    from omegaconf import OmegaConf

    import cmidd  # noqa: F401  (the resolvers the saved config uses)

    path = job / ".hydra" / "config.yaml"
    if not path.exists():
        return {}
    config = OmegaConf.load(path)
    try:
        return OmegaConf.to_container(config, resolve=True)
    except Exception:  # noqa: BLE001 -- e.g. the failed job's own bad interpolation
        return OmegaConf.to_container(config, resolve=False)


def _overrides(job: Path) -> list:
    """A job's overrides; a compare run's base run (``<run>/base/``) is its run's without CMI."""
    own, parent = job / ".hydra" / "overrides.yaml", job.parent / ".hydra" / "overrides.yaml"
    if own.exists():
        return yaml.safe_load(own.read_text()) or []
    if job.name == "base" and parent.exists():
        return [*(yaml.safe_load(parent.read_text()) or []), "cmi.weight=0"]
    return []


def _merged_overrides(results: dict) -> list:
    """A merged run's overrides: its first shard's, without the shard's index."""
    shards = results.get("shards") or []
    kept = _overrides(Path(shards[0])) if shards else []
    return [o for o in kept if not o.lstrip("+~").startswith("shard.")]


def read_sweep(root: Path) -> list:
    """Every job under ``root``: a directory with Hydra's ``.hydra/`` or a ``results.json``."""
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory")
    job_dirs = sorted(
        {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}
        | {p.parent for p in root.rglob("results.json")}
    )
    if not job_dirs:
        raise ValueError(
            f"no runs under {root}: expected job directories with results.json "
            "or .hydra/ (the output of python launch.py -m ... or sweep=...)"
        )
    runs = []
    for job in job_dirs:
        results_file = job / "results.json"
        results = json.loads(results_file.read_text()) if results_file.exists() else {}
        if (results.get("shard") or {}).get("count", 1) > 1:
            continue  # a part of a run's classes: its merge is the run (cmidd/merge.py)
        merged = results.get("shards")  # a merge's folder: the run's overrides, not task=merge's
        key, seed = _job_key(_merged_overrides(results) if merged else _overrides(job))
        run = Run(path=job, key=key, seed=seed)
        if results_file.exists():
            run.results = results
            run.status = run.results.get("status", "finished")
            run.seed = run.get("seed") if run.seed is None else run.seed
        else:
            run.results = {"config": _job_config(job)}
            error = job / "error.txt"
            run.status = "missing: " + (
                error.read_text().strip().splitlines()[-1] if error.exists() else "no results.json"
            )
        runs.append(run)
    return _apart_by_commit(runs)


def _apart_by_commit(runs: list) -> list:
    """Runs of one job key made at different commits (or with uncommitted changes) are not
    aggregated together: their keys name the code (``@<commit>``, ``+dirty``)."""
    if len({r.code for r in runs if r.code}) > 1:
        for run in runs:
            run.key = f"{run.key} @{run.code or 'unknown'}"
    return runs


def accuracy(run: Run, arch: str = None, split: str = "test"):
    """(mean, per-network accuracies) of ``arch`` (the first architecture by default) on the test
    set, or on the validation split (``split="val"``; None without one)."""
    table = run.results.get("accuracy") or {}
    if not run.ok or not table:
        return None, []
    entry = table[arch] if arch else next(iter(table.values()))
    entry = entry if split == "test" else entry.get("val")
    return (None, []) if entry is None else (entry["mean"], entry["runs"])


def summarize(runs: list, arch: str = None, split: str = "test") -> dict:
    """Mean and std over seeds and over all evaluation networks of a group of runs."""
    done = [r for r in runs if r.ok and accuracy(r, arch, split)[0] is not None]
    means = [accuracy(r, arch, split)[0] for r in done]
    networks = [a for r in done for a in accuracy(r, arch, split)[1]]
    return {
        "n": len(runs),
        "done": len(done),
        "mean": statistics.fmean(networks) if networks else None,
        "std_networks": statistics.pstdev(networks) if len(networks) > 1 else 0.0,
        "std_seeds": statistics.stdev(means) if len(means) > 1 else None,
        "statuses": sorted({r.status for r in runs if not r.ok}),
    }


# Two-sided 95% quantiles of Student's t by degrees of freedom (1 to 30); beyond, the normal's.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)  # fmt: skip


def paired(base: list, other: list, arch: str = None, split: str = "test") -> dict:
    """The difference ``other`` - ``base`` in points over the seeds both finished: its mean, the
    95% interval of that mean (Student's t over the per-seed differences) and the verdict:
    ``helps`` or ``hurts`` when the interval excludes 0, else ``not established``."""
    first, second = (
        {r.seed: accuracy(r, arch, split)[0] for r in runs if r.ok} for runs in (base, other)
    )
    seeds = sorted(s for s in first.keys() & second.keys() if None not in (first[s], second[s]))
    diffs = [100 * (second[s] - first[s]) for s in seeds]
    if not diffs:
        return {"seeds": [], "mean": None, "low": None, "high": None, "verdict": "missing"}
    mean, half = statistics.fmean(diffs), float("inf")
    if len(diffs) > 1:
        t = _T95[len(diffs) - 2] if len(diffs) - 1 <= len(_T95) else 1.96
        half = t * statistics.stdev(diffs) / len(diffs) ** 0.5
    low, high = mean - half, mean + half
    verdict = "helps" if low > 0 else "hurts" if high < 0 else "not established"
    return {"seeds": seeds, "mean": mean, "low": low, "high": high, "verdict": verdict}


def paired_cell(result: dict) -> str:
    """``+0.60 [+0.13, +1.08], helps (5 seeds)``; one seed has no interval."""
    if result["mean"] is None:
        return "missing"
    n = len(result["seeds"])
    if n < 2:
        return f"{result['mean']:+.2f} (1 seed: not established)"
    interval = f"[{result['low']:+.2f}, {result['high']:+.2f}]"
    return f"{result['mean']:+.2f} {interval}, {result['verdict']} ({n} seeds)"


def cell(summary: dict) -> str:
    """``mean ± std`` in percent (std over seeds when there are several, else over networks);
    missing or failed runs are named, never dropped."""
    if summary is None or summary["n"] == 0:
        return "missing"
    if summary["done"] == 0:
        statuses = summary["statuses"]
        if statuses and all(s.startswith("skipped") for s in statuses):
            return "skipped"
        return "failed" if any(s.startswith("failed") for s in statuses) else "missing"
    std = summary["std_seeds"] if summary["std_seeds"] is not None else summary["std_networks"]
    text = f"{100 * summary['mean']:.2f} ± {100 * std:.2f}"
    if summary["done"] < summary["n"]:
        text += f" ({summary['n'] - summary['done']} of {summary['n']} failed/missing)"
    return text
