"""DD-Ranking's scores of a distilled set (Li, Zhong et al., "DD-Ranking: Rethinking the
Evaluation of Dataset Distillation", arXiv 2505.13300; NUS-HPC-AI-Lab/DD-Ranking, README and
doc/introduction.md, the formulas of ddranking/metrics/hard_label.py L380-383 and
aug_robust.py L577-580), from accuracies as fractions in [0, 1], as the docs define them:

    HLR = Acc(full, hard) - Acc(syn, hard)               hard-label recovery (lower is better)
    IOR = Acc(syn, any) - Acc(random, any)               improvement over random (higher)
    LRS = (e^a - e^-1) / (e - e^-1),  a = w IOR - (1 - w) HLR          label-robust score
    ARS = (e^b - e^-1) / (e - e^-1),  b = g (Acc(syn, aug) - Acc(random, aug))
                                          + (1 - g) (Acc(syn, no aug) - Acc(random, no aug))

with w = g = 0.5 (the leaderboard's). LRS and ARS lie in [0, 1] for fractions (DD-Ranking's
code passes percentages, which leaves that range; the docs' fractions are followed here), and
are computed per seed and then averaged, as DD-Ranking averages them over its evaluation runs.
In cmidd every protocol but ``eval=kd`` trains on hard labels, so ``any`` is ``hard`` there;
under ``eval=kd`` ``any`` is the soft-label students' accuracy and ``hard`` the same students'
on hard labels (``hard/<arch>``, its ``eval.hard``). The random set is the random real images of
the same IPC (``method=random``), and the full data are the whole training split under the same
protocol (``method=whole_dataset``).
"""

import math
import statistics
from collections import defaultdict

from .runs import accuracy

_SCALE = math.e - math.exp(-1)


def _normalized(x: float) -> float:
    return (math.exp(x) - math.exp(-1)) / _SCALE


def label_robust(full: float, syn: float, random: float, w: float = 0.5, syn_hard=None) -> dict:
    """HLR, IOR and LRS of one evaluation (accuracies as fractions); ``syn_hard``: the set's
    hard-label accuracy where ``syn`` is not one (soft labels)."""
    hlr, ior = full - (syn if syn_hard is None else syn_hard), syn - random
    return {"hlr": hlr, "ior": ior, "lrs": _normalized(w * ior - (1 - w) * hlr)}


def augmentation_robust(syn_aug, random_aug, syn_plain, random_plain, g: float = 0.5) -> float:
    """ARS of one evaluation, from accuracies with and without augmentation (fractions)."""
    return _normalized(g * (syn_aug - random_aug) + (1 - g) * (syn_plain - random_plain))


def hard_accuracy(run):
    """The run's hard-label accuracy: its ``hard/<arch>`` entry (``eval=kd``), else its first."""
    hard = next((k for k in run.results.get("accuracy") or {} if k.startswith("hard/")), None)
    return accuracy(run, hard)[0]


def _by_seed(runs: list, read=lambda run: accuracy(run)[0]) -> dict:
    return {r.seed: read(r) for r in runs if r.ok and read(r) is not None}


def scores(method_runs: list, random_runs: list, whole_runs: list) -> dict:
    """Mean and (population) std over the seeds all three have of HLR, IOR and LRS, in points
    for HLR and IOR and as a fraction for LRS, and the seeds; None when no seed is shared."""
    syn, random, whole = (_by_seed(r) for r in (method_runs, random_runs, whole_runs))
    hard = _by_seed(method_runs, hard_accuracy)
    seeds = sorted(syn.keys() & random.keys() & whole.keys())
    if not seeds:
        return None
    per_seed = [label_robust(whole[s], syn[s], random[s], syn_hard=hard[s]) for s in seeds]
    summary = {"seeds": seeds}
    for name in ("hlr", "ior", "lrs"):
        values = [p[name] * (100 if name != "lrs" else 1) for p in per_seed]
        summary[name] = (statistics.fmean(values), statistics.pstdev(values))
    return summary


def table(runs: list, label) -> str:
    """A row per method setting (and ``+ CMI``) and (dataset, IPC) with DD-Ranking's scores
    against the sweep's random and whole-dataset rows of the same dataset, IPC and seeds;
    ``label(method, with_cmi)`` names a row. Empty without those two rows."""
    groups = defaultdict(list)
    for run in runs:
        if not run.status.startswith("skipped"):
            column = (run.get("dataset.name"), run.get("ipc"))
            groups[(run.get("method.name"), run.with_cmi, *column)].append(run)
    lines = []
    for (method, with_cmi, dataset, ipc), group in sorted(groups.items(), key=str):
        if method in ("random", "whole_dataset"):
            continue
        random = groups.get(("random", False, dataset, ipc), [])
        whole = groups.get(("whole_dataset", False, dataset, ipc), [])
        found = scores(group, random, whole)
        if found is None:
            continue
        cells = [f"{found[k][0]:+.2f} ± {found[k][1]:.2f}" for k in ("hlr", "ior")]
        cells.append(f"{found['lrs'][0]:.4f} ± {found['lrs'][1]:.4f}")
        seeds = ", ".join(str(s) for s in found["seeds"])
        row = [label(method, with_cmi), dataset, ipc, *cells, seeds]
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    if not lines:
        return ""
    header = "| method | dataset | IPC | HLR (points) | IOR (points) | LRS | seeds |"
    return "\n".join([header, "|" + " --- |" * 7, *lines])
