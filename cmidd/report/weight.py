"""The ``weight`` study: accuracy against the CMI weight, per setting, and how ``auto`` compares.

A sweep may hold several settings (e.g. ``proxy=convnet,alexnet``): each gets its own table.
Every choice is made on the validation split (``dataset.val``), never on the test set: the best
fixed weight is the one with the highest validation accuracy, and the test accuracy is shown
beside it. Below a table, each ``auto`` setting is set against the base (weight 0) and the best
fixed weight, on validation accuracy, by the criteria of ``cmi.weight=auto``'s transfer test
(docs/cmi_weight.md): within ``TOLERANCE`` points of the best fixed weight and not below the
base. Runs without a validation split get no best weight and no verdict.
"""

import re
from collections import defaultdict

from .runs import cell, summarize

TOLERANCE = 0.5  # points of accuracy

# The CMI weight and auto's settings vary within a setting; every other override names it (job
# keys keep an override's +, ++ or ~).
_WEIGHT_ITEMS = re.compile(r"(^|,)[+~]*cmi\.(weight|auto\.\w+)(=[^,]*)?")


def by_setting(runs: list) -> dict:
    """{setting: runs}, by name; a setting is the job key without the CMI weight (and auto's
    settings)."""
    groups = defaultdict(list)
    for run in runs:
        groups[_WEIGHT_ITEMS.sub("", run.key).strip(",") or "defaults"].append(run)
    return dict(sorted(groups.items()))


def _number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def auto_name(run) -> str:
    """``auto`` with its settings: ratio, and mode with the setting that mode uses."""
    mode = run.get("cmi.auto.mode")
    detail = run.get("cmi.auto.momentum" if mode == "track" else "cmi.auto.calibrate")
    return f"auto (ratio {run.get('cmi.auto.ratio')}, {mode} {detail})"


def _auto_label(group: list) -> str:
    """``auto`` with its settings and the weights it chose (mean, and range over the runs)."""
    chosen = [r.weight_used for r in group if _number(r.weight_used)]
    label = auto_name(group[0])
    if chosen:
        label += f": {sum(chosen) / len(chosen):.4g}"
        label += f" [{min(chosen):.4g}, {max(chosen):.4g}]" if len(chosen) > 1 else ""
    return label


def _split(runs: list) -> tuple:
    """{fixed weight: runs} in increasing order, and {auto's name: runs}."""
    fixed, auto = defaultdict(list), defaultdict(list)
    for run in runs:
        if run.get("cmi.weight") == "auto":
            auto[auto_name(run)].append(run)
        else:
            fixed[run.get("cmi.weight")].append(run)
    order = sorted(fixed, key=lambda w: float(w) if _number(w) else -1)
    return {w: fixed[w] for w in order}, dict(sorted(auto.items()))


def best(fixed: dict):
    """The fixed weight > 0 with the highest mean validation accuracy, or None."""
    means = {w: summarize(g, split="val")["mean"] for w, g in fixed.items() if _number(w)}
    weighted = {w: m for w, m in means.items() if m is not None and float(w) > 0}
    return max(weighted, key=weighted.get) if weighted else None


def verdict(fixed: dict, auto: list) -> str:
    """How ``auto``'s mean validation accuracy compares with the base's and the best fixed
    weight's, to the 0.01 points the report shows."""
    summaries = {w: summarize(g, split="val") for w, g in fixed.items() if _number(w)}
    means = {w: s["mean"] for w, s in summaries.items() if s["mean"] is not None}
    mine = summarize(auto, split="val")
    base = next((m for w, m in means.items() if float(w) == 0), None)
    weighted = {w: m for w, m in means.items() if float(w) > 0}
    if mine["mean"] is None or base is None or not weighted:
        return (
            "not comparable: it needs finished runs with a validation split (dataset.val) of "
            "auto, of weight 0 and of a weight > 0"
        )
    top = max(weighted, key=weighted.get)
    to_best = round(100 * (mine["mean"] - weighted[top]), 2)
    to_base = round(100 * (mine["mean"] - base), 2)
    shortfalls = []
    if to_best < -TOLERANCE:
        shortfalls.append(f"more than {TOLERANCE} points below the best fixed weight")
    if to_base < 0:
        shortfalls.append("below the base")
    outcome = "falls short: " + " and ".join(shortfalls) if shortfalls else "meets both criteria"
    unfinished = [f"auto {mine['done']} of {mine['n']}"] if mine["done"] < mine["n"] else []
    unfinished += [
        f"{w}: {s['done']} of {s['n']}" for w, s in summaries.items() if s["done"] < s["n"]
    ]
    if unfinished:
        outcome += f" (runs finished: {', '.join(unfinished)})"
    return (
        f"on validation, {to_best:+.2f} points against the best fixed weight ({top}), "
        f"{to_base:+.2f} against the base (weight 0): {outcome}"
    )


def _row(name, group, mark: str = "") -> str:
    val, test = summarize(group, split="val"), summarize(group)
    return f"| {name}{mark} | {cell(val) if val['done'] else 'no split'} | {cell(test)} |"


def _table(runs: list) -> list:
    fixed, auto = _split(runs)
    chosen = best(fixed)
    lines = ["| cmi.weight | validation (%) | test (%) |", "| --- | --- | --- |"]
    lines += [_row(w, g, " (best on validation)" if w == chosen else "") for w, g in fixed.items()]
    lines += [_row(_auto_label(g), g) for g in auto.values()]
    if auto:
        lines.append("")
        lines += [f"- {name}: {verdict(fixed, g)}" for name, g in auto.items()]
    return lines


def weight(runs: list) -> str:
    """A table per setting: a row per fixed weight, by value, then a row per ``auto`` setting
    with the weights it chose, and auto's verdict against the base and the best fixed weight."""
    settings = by_setting(runs)
    if len(settings) == 1:
        return "\n".join(_table(runs))
    lines = []
    for name, group in settings.items():
        lines += [f"### {name}", "", *_table(group), ""]
    return "\n".join(lines).rstrip()
