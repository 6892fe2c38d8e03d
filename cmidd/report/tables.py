"""Markdown and CSV renderings of a sweep, laid out like the paper's tables."""

import csv
import io
from collections import defaultdict

from . import ddranking
from .runs import cell, paired, paired_cell, summarize
from .weight import weight


def _markdown(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _order(value):
    """Sort key for table rows and columns that tolerates missing (None) values."""
    return (value is None, value != "convnet", str(value))


def _groups(runs: list, *keys) -> dict:
    """Runs grouped by the values of config ``keys``."""
    groups = defaultdict(list)
    for run in runs:
        groups[tuple(run.get(k) for k in keys)].append(run)
    return groups


def all_groups(runs: list) -> str:
    """Every group of runs that differ only by seed, with each evaluated architecture."""
    by_key = defaultdict(list)
    for run in runs:
        by_key[run.key].append(run)
    archs = sorted({a for r in runs for a in (r.results.get("accuracy") or {})}) or ["accuracy"]
    rows = []
    for key, group in sorted(by_key.items()):
        seeds = ", ".join(
            str(r.seed) for r in sorted(group, key=lambda r: (r.seed is None, r.seed))
        )
        rows.append(
            [key, seeds] + [cell(summarize(group, a if a != "accuracy" else None)) for a in archs]
        )
    return _markdown(["overrides", "seeds"] + archs, rows)


def table7(runs: list) -> str:
    """Rows: CMI space x pre-trained proxies; columns: proxy architecture (the paper's Table 7)."""
    groups = _groups(runs, "cmi.space", "cmi.pretrained", "proxy.name")
    proxies = sorted({k[2] for k in groups}, key=_order)
    rows = []
    for space in ("probability", "feature"):
        for pretrained in (False, True):
            rows.append(
                [space, "yes" if pretrained else "no"]
                + [
                    cell(summarize(groups.get((space, pretrained, p), [])))
                    if groups.get((space, pretrained, p))
                    else "missing"
                    for p in proxies
                ]
            )
    return _markdown(["CMI space", "pre-trained"] + proxies, rows)


def proxy_arch(runs: list) -> str:
    """The CMI of the synthetic set at the start, at the end without and with CMI (Tables 10-11)."""

    def mean_cmi(group, which):
        values = [
            r.results["cmi"][which] for r in group if r.ok and r.results["cmi"][which] is not None
        ]
        return f"{sum(values) / len(values):.4g}" if values else "missing"

    groups = _groups(runs, "proxy.name")
    rows = []
    for (proxy,), group in sorted(groups.items(), key=lambda i: _order(i[0][0])):
        base = [r for r in group if not r.with_cmi]
        reg = [r for r in group if r.with_cmi]
        rows.append(
            [
                proxy,
                mean_cmi(base + reg, "start"),
                mean_cmi(base, "end"),
                mean_cmi(reg, "end"),
                cell(summarize(base)) if base else "missing",
                cell(summarize(reg)) if reg else "missing",
            ]
        )
    return _markdown(
        [
            "proxy",
            "CMI start",
            "CMI end, without CMI",
            "CMI end, with CMI",
            "accuracy without CMI (%)",
            "accuracy with CMI (%)",
        ],
        rows,
    )


# The paper's row order and spelling; any other method follows, in name order, in capitals.
PAPER_ORDER = ("random", "herding", "kcenter", "forgetting", "dm", "dc", "dsa", "idc", "idm", "mtt")
LAST = "whole_dataset"  # the upper bound closes the table, as in the paper
LABELS = {
    "random": "Random",
    "herding": "Herding",
    "kcenter": "K-Center",
    "forgetting": "Forgetting",
    "whole_dataset": "Whole Dataset",
}
ARCHS = ("convnet", "alexnet", "vgg11", "resnet18")


def _methods(runs: list) -> list:
    """The methods of the runs in the paper's order, then the others."""
    names = {r.get("method.name") for r in runs if r.get("method.name")}
    order = list(PAPER_ORDER)
    rank = {LAST: len(order) + 1}
    return sorted(
        names, key=lambda m: (order.index(m) if m in order else rank.get(m, len(order)), m)
    )


def _label(method: str, with_cmi: bool) -> str:
    name = LABELS.get(method, method.upper())
    return f"{name} + CMI" if with_cmi else name


def _method_rows(runs: list, columns: list, part) -> list:
    """Per method: its row without CMI, and where it has runs with CMI (a method that takes no
    CMI term has none: they were skipped), the +CMI row and the Delta row, the paired
    difference over seeds with its 95% interval and verdict; ``part(group, column)`` is the
    runs of one cell and the architecture they are read at."""

    def summary(group, column):
        return summarize(*part(group, column)) if group else None

    def delta(base, reg, column):
        (base, arch), (reg, _) = part(base, column), part(reg, column)
        return paired_cell(paired(base, reg, arch))

    rows = []
    for method in _methods(runs):
        mine = [r for r in runs if r.get("method.name") == method]
        base = [r for r in mine if not r.with_cmi]
        reg = [r for r in mine if r.with_cmi]
        rows.append([_label(method, False)] + [cell(summary(base, c)) for c in columns])
        if not reg:
            continue
        rows.append([_label(method, True)] + [cell(summary(reg, c)) for c in columns])
        rows.append(["Δ"] + [delta(base, reg, c) for c in columns])
    return rows


def table1(runs: list) -> str:
    """The paper's Table 1: rows by method (coresets, then each base method, its +CMI row and
    the difference), columns dataset x IPC; mean ± std over seeds, in %."""
    runs = [r for r in runs if not r.status.startswith("skipped")]
    columns = sorted({(r.get("dataset.name"), r.get("ipc")) for r in runs}, key=str)

    def part(group, column):
        return [r for r in group if (r.get("dataset.name"), r.get("ipc")) == column], None

    header = ["method"] + [f"{d} IPC {i}" for d, i in columns]
    table = _markdown(header, _method_rows(runs, columns, part))
    scores = ddranking.table(runs, _label)
    if scores:
        table += (
            "\n\nDD-Ranking's scores (cmidd/report/ddranking.py) against the Random and Whole "
            "Dataset rows of the same seeds: hard-label recovery HLR (lower is better), "
            "improvement over random IOR, label-robust score LRS (in [0, 1], higher is better); "
            "mean ± std over seeds.\n\n" + scores
        )
    return table


def table5(runs: list) -> str:
    """The paper's Table 5: rows by method (+CMI, difference), columns the evaluation
    architectures of eval=cross_arch; mean ± std over seeds, in %."""
    runs = [r for r in runs if not r.status.startswith("skipped")]
    found = {a for r in runs for a in (r.results.get("accuracy") or {})}
    columns = [a for a in ARCHS if a in found] + sorted(found - set(ARCHS))

    def part(group, arch):
        return group, arch

    return _markdown(["method"] + columns, _method_rows(runs, columns, part))


TECHNIQUES = {
    "iid": "IID",
    "dream": "DREAM",
    "seqmatch": "SeqMatch",
    "seqmatch_shared": "SeqMatch (shared experts, a variant)",
}


def _plugin(run) -> str:
    return run.get("plugin.name") or "none"  # runs from before plug-ins had none


def _setting(run) -> tuple:
    return run.get("method.name"), run.get("dataset.name"), run.get("ipc")


def table6(runs: list) -> str:
    """The paper's Table 6: a row per plug-in technique on its base method (and dataset, IPC):
    the base method without and with CMI, the technique without and with CMI, and what CMI adds
    to the technique; mean ± std over seeds, in %."""
    runs = [r for r in runs if not r.status.startswith("skipped")]
    found = {(_plugin(r), *_setting(r)) for r in runs if _plugin(r) != "none"}
    rows = []
    for name, *setting in sorted(found, key=str):
        mine = [r for r in runs if _setting(r) == tuple(setting)]
        groups = [
            [r for r in mine if _plugin(r) == technique and r.with_cmi == with_cmi]
            for technique in ("none", name)
            for with_cmi in (False, True)
        ]
        method, dataset, ipc = setting
        label = f"{TECHNIQUES.get(name, name)} on {method.upper()}"
        cells = [cell(summarize(g)) for g in groups]
        rows.append([label, dataset, ipc, *cells, paired_cell(paired(groups[2], groups[3]))])
    header = ["technique", "dataset", "IPC", "base", "base + CMI", "technique", "technique + CMI"]
    return _markdown(header + ["Δ (CMI on the technique)"], rows)


STUDIES = {
    "table1": table1,
    "table5": table5,
    "table6": table6,
    "table7": table7,
    "weight": weight,
    "proxy_arch": proxy_arch,
}

COLUMNS = [
    "path",
    "key",
    "seed",
    "status",
    "method",
    "plugin",
    "dataset",
    "ipc",
    "proxy",
    "cmi_space",
    "cmi_pretrained",
    "cmi_weight",
    "cmi_weight_used",
    "arch",
    "accuracy",
    "accuracy_std",
    "val_accuracy",
    "cmi_start",
    "cmi_end",
    "iterations",
    "seconds_per_iteration",
]


def runs_csv(runs: list, root) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for run in runs:
        common = [
            run.path.relative_to(root),
            run.key,
            run.seed,
            run.status,
            run.get("method.name"),
            _plugin(run),
            run.get("dataset.name"),
            run.get("ipc"),
            run.get("proxy.name"),
            run.get("cmi.space"),
            run.get("cmi.pretrained"),
            run.get("cmi.weight"),
            run.weight_used,
        ]
        tail = [
            (run.results.get("cmi") or {}).get("start"),
            (run.results.get("cmi") or {}).get("end"),
            run.results.get("iterations"),
            run.results.get("seconds_per_iteration"),
        ]
        table = run.results.get("accuracy") or {None: {}}
        for arch, entry in table.items():
            val = (entry.get("val") or {}).get("mean")
            writer.writerow(common + [arch, entry.get("mean"), entry.get("std"), val] + tail)
    return out.getvalue()
