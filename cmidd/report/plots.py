"""PNG plots of a sweep: accuracy against the weight (Figure 2), accuracy against iteration
(Figure 3) and the distillation loss against iteration (Figure 5); and of a single run, its
accuracy and its set's CMI against iteration (``curve.png``)."""

import statistics
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import weight as weight_study  # noqa: E402
from .runs import summarize  # noqa: E402


def run_curve(results: dict, path) -> None:
    """A run's accuracy per evaluated architecture and its set's CMI, against iteration."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    points = results["accuracy_curve"]
    for arch in [k for k in (points[0] if points else {}) if k != "iteration"]:
        left.plot(
            [p["iteration"] for p in points], [100 * p[arch] for p in points], "o-", label=arch
        )
    left.set(xlabel="iteration", ylabel="test accuracy (%)", title="Accuracy of the set")
    left.legend()
    measured = [p for p in results.get("cmi_curve", []) if p["cmi"] is not None]
    right.plot([p["iteration"] for p in measured], [p["cmi"] for p in measured], "o-")
    right.set(xlabel="iteration", ylabel="CMI (nats)", title="The set's CMI (first proxy)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def weight_plot(runs: list, path) -> None:
    """Accuracy against the CMI weight, a panel per setting of the sweep (report/weight.py)."""
    settings = weight_study.by_setting(runs)
    count = len(settings)
    fig, axes = plt.subplots(1, count, figsize=(5 * count, 3.5), squeeze=False)
    for ax, (name, group) in zip(axes[0], settings.items(), strict=True):
        _weight_axes(ax, group, name if count > 1 else "Sensitivity to the CMI weight")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _weight_axes(ax, runs: list, title: str) -> None:
    by_weight = defaultdict(list)
    for run in runs:
        try:
            by_weight[float(run.get("cmi.weight") or 0)].append(run)
        except (TypeError, ValueError):  # a job that failed before resolving its weight
            continue
    points = sorted((w, summarize(g)) for w, g in by_weight.items() if w > 0)
    points = [(w, s) for w, s in points if s["mean"] is not None]
    if points:
        ax.errorbar(
            [w for w, _ in points],
            [100 * s["mean"] for _, s in points],
            yerr=[100 * (s["std_seeds"] or s["std_networks"]) for _, s in points],
            marker="o",
            capsize=3,
            label="with CMI",
        )
    _auto_points(ax, [r for r in runs if r.get("cmi.weight") == "auto"])
    base = summarize(by_weight.get(0.0, []))
    if base["mean"] is not None:
        ax.axhline(100 * base["mean"], color="gray", linestyle="--", label="without CMI")
    ax.set_xscale("log")
    ax.set(xlabel="cmi.weight", ylabel="test accuracy (%)", title=title)
    ax.legend()


def _auto_points(ax, runs: list) -> None:
    """``cmi.weight=auto`` runs: a point per setting, at the mean weight they chose."""
    by_setting = defaultdict(list)
    for run in runs:
        if run.ok and isinstance(run.weight_used, (int, float)) and run.weight_used > 0:
            by_setting[weight_study.auto_name(run)].append(run)
    for label, group in sorted(by_setting.items()):
        s = summarize(group)
        if s["mean"] is None:
            continue
        ax.errorbar(
            [statistics.fmean(r.weight_used for r in group)],
            [100 * s["mean"]],
            yerr=[100 * (s["std_seeds"] or s["std_networks"])],
            marker="*",
            markersize=10,
            linestyle="none",
            capsize=3,
            label=label,
        )


def curve_plot(runs: list, path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    by_setting = defaultdict(list)
    for run in runs:
        if run.ok:
            by_setting["with CMI" if run.with_cmi else "without CMI"].append(run)
    for label, group in sorted(by_setting.items()):
        per_iteration = defaultdict(list)
        for run in group:
            for point in run.results["accuracy_curve"]:
                arch = next(k for k in point if k != "iteration")
                per_iteration[point["iteration"]].append(point[arch])
        xs = sorted(per_iteration)
        ax.plot(xs, [100 * statistics.fmean(per_iteration[x]) for x in xs], marker="o", label=label)
    ax.set(xlabel="iteration", ylabel="test accuracy (%)", title="Accuracy during distillation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def loss_plot(runs: list, path) -> None:
    """L_DD (the distillation loss, without the CMI term) against iteration, with and without
    CMI, averaged over the runs of each (the paper's Figure 5), from results.json's loss_curve;
    one panel per method, whose losses have different scales."""
    by_method = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.ok and run.results.get("loss_curve"):
            setting = "with CMI" if run.with_cmi else "without CMI"
            by_method[run.get("method.name")][setting].append(run)
    panels = max(len(by_method), 1)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.5), squeeze=False)
    for ax, (method, by_setting) in zip(axes[0], sorted(by_method.items()), strict=False):
        for label, group in sorted(by_setting.items()):
            per_iteration = defaultdict(list)
            for run in group:
                for point in run.results["loss_curve"]:
                    per_iteration[point["iteration"]].append(point["distill"])
            xs = sorted(per_iteration)
            ax.plot(xs, [statistics.fmean(per_iteration[x]) for x in xs], label=label)
        ax.set(xlabel="iteration", ylabel="L_DD", title=f"Distillation loss, {method}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# Per study, the plots of its report: {file stem: function}.
PLOTS = {
    "weight": {"weight": weight_plot},
    "curve": {"curve": curve_plot, "loss": loss_plot},
    "table1": {"loss": loss_plot},
}
