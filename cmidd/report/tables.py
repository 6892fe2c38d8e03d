"""Markdown and CSV renderings of a sweep, laid out like the paper's tables."""

import csv
import io
from collections import defaultdict

from .runs import cell, summarize
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
LABELS = {
    "random": "Random",
    "herding": "Herding",
    "kcenter": "K-Center",
    "forgetting": "Forgetting",
}
ARCHS = ("convnet", "alexnet", "vgg11", "resnet18")


def _methods(runs: list) -> list:
    """The methods of the runs in the paper's order, then the others."""
    names = {r.get("method.name") for r in runs if r.get("method.name")}
    order = list(PAPER_ORDER)
    return sorted(names, key=lambda m: (order.index(m) if m in order else len(order), m))


def _delta(base: dict, reg: dict) -> str:
    if base["mean"] is None or reg["mean"] is None:
        return "missing"
    return f"{100 * (reg['mean'] - base['mean']):+.2f}"


def _method_rows(runs: list, columns: list, select) -> list:
    """Per method: its row without CMI, and where it has runs with CMI (a method that takes no
    CMI term has none: they were skipped), the +CMI row and the Delta row; ``select(group,
    column)`` summarizes the runs of one cell."""
    rows = []
    for method in _methods(runs):
        mine = [r for r in runs if r.get("method.name") == method]
        base = [r for r in mine if not r.with_cmi]
        reg = [r for r in mine if r.with_cmi]
        label = LABELS.get(method, method.upper())
        rows.append([label] + [cell(select(base, c)) if base else "missing" for c in columns])
        if not reg:
            continue
        rows.append(
            [f"{label} + CMI"] + [cell(select(reg, c)) if reg else "missing" for c in columns]
        )
        rows.append(["Δ"] + [_delta(select(base, c), select(reg, c)) for c in columns])
    return rows


def table1(runs: list) -> str:
    """The paper's Table 1: rows by method (coresets, then each base method, its +CMI row and
    the difference), columns dataset x IPC; mean ± std over seeds, in %."""
    runs = [r for r in runs if not r.status.startswith("skipped")]
    columns = sorted({(r.get("dataset.name"), r.get("ipc")) for r in runs}, key=str)

    def select(group, column):
        return summarize([r for r in group if (r.get("dataset.name"), r.get("ipc")) == column])

    header = ["method"] + [f"{d} IPC {i}" for d, i in columns]
    return _markdown(header, _method_rows(runs, columns, select))


def table5(runs: list) -> str:
    """The paper's Table 5: rows by method (+CMI, difference), columns the evaluation
    architectures of eval=cross_arch; mean ± std over seeds, in %."""
    runs = [r for r in runs if not r.status.startswith("skipped")]
    found = {a for r in runs for a in (r.results.get("accuracy") or {})}
    columns = [a for a in ARCHS if a in found] + sorted(found - set(ARCHS))

    def select(group, arch):
        return summarize(group, arch)

    return _markdown(["method"] + columns, _method_rows(runs, columns, select))


TECHNIQUES = {"iid": "IID", "dream": "DREAM", "seqmatch": "SeqMatch"}


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
        cells = [
            summarize([r for r in mine if _plugin(r) == technique and r.with_cmi == with_cmi])
            for technique in ("none", name)
            for with_cmi in (False, True)
        ]
        method, dataset, ipc = setting
        label = f"{TECHNIQUES.get(name, name)} on {method.upper()}"
        rows.append([label, dataset, ipc, *(cell(c) for c in cells), _delta(cells[2], cells[3])])
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
            writer.writerow(common + [arch, entry.get("mean"), entry.get("std")] + tail)
    return out.getvalue()
