"""``task=compare``, the demo's main job (``python launch.py``): the configured run and, when it
adds the CMI term, the same run without it (the same seed, data and proxy pool, in
``<run dir>/base/``), then the two side by side: their accuracy, the set's CMI at the start and
the end, and ``comparison.png``, each set's images above its t-SNE in the first proxy's
features, where each class's images drawn together are what CMI does.

In a sweep (``-m``, ``sweep=...``) a job is the configured run alone: the sweep's report
compares its runs.
"""

import copy
import logging
import textwrap
from pathlib import Path

import matplotlib
import torch
from omegaconf import DictConfig

from . import overrides
from .app import multirun
from .cmi_weight import weighted
from .components import load_real, proxy_pool
from .files import write_json
from .loggers import chosen
from .runtime import resolve_device
from .synthetic import SyntheticSet
from .tasks import distill
from .validate import combination
from .visualize import tsne

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)


def compare(cfg: DictConfig, out_dir: Path, note: str = None) -> dict:
    """The runs and their comparison; returns the configured run's results. ``note``: what seeds
    showed for the demo's setting, printed beneath (a single seed cannot tell noise apart)."""
    if multirun() or not weighted(cfg.cmi.weight) or combination(cfg):
        return distill(cfg, out_dir)
    base_cfg = copy.deepcopy(cfg)
    base_cfg.cmi.weight = 0.0
    with overrides.adding("cmi.weight=0"):
        base = distill(base_cfg, out_dir / "base")
    with_cmi = distill(cfg, out_dir)
    label = chosen(cfg)["method"].upper()
    runs = {label: (base, out_dir / "base"), f"{label} + CMI": (with_cmi, out_dir)}
    rows = {name: _row(results) for name, (results, _) in runs.items()}
    picture = out_dir / "comparison.png"
    _figure(cfg, {name: path for name, (_, path) in runs.items()}, rows, picture)
    write_json(out_dir / "comparison.json", rows | {"note": note})
    print(_table(cfg, rows, note, picture))
    return with_cmi


def _row(results: dict) -> dict:
    """A run's accuracy (the first architecture's, in %) and its set's CMI."""
    accuracy = next(iter(results["accuracy"].values()))
    cmi = results["cmi"]
    return {
        "accuracy": 100 * accuracy["mean"],
        "accuracy_std": 100 * accuracy["std"],
        "cmi_start": cmi["start"],
        "cmi_end": cmi["end"],
        "weight": cmi.get("weight"),
    }


def _table(cfg: DictConfig, rows: dict, note: str, picture: Path) -> str:
    (base_name, base), (name, with_cmi) = rows.items()
    named = chosen(cfg)
    width = max(len(n) for n in rows) + 2
    lines = [
        "",
        f"{base_name} with and without CMI: dataset={named['dataset']}, ipc={cfg.ipc}, "
        f"seed={cfg.seed}, the same proxy pool ({named['proxy']}).",
        f"  {'':{width}}{'accuracy (%)':>16}   CMI of the set: start -> end",
    ]
    for row_name, row in rows.items():
        accuracy = f"{row['accuracy']:.2f} ± {row['accuracy_std']:.2f}"
        cmi = (
            f"{row['cmi_start']:.3g} -> {row['cmi_end']:.3g}" if row["cmi_end"] else "not measured"
        )
        lines.append(f"  {row_name:{width}}{accuracy:>16}   {cmi}")
    change = with_cmi["accuracy"] - base["accuracy"]
    lines.append(f"  {'difference':{width}}{change:>+16.2f}   (weight {with_cmi['weight']:.4g})")
    if note:
        lines += textwrap.wrap(note, 96, initial_indent="  ", subsequent_indent="  ")
    lines.append(f"  picture: {picture.resolve()}")
    return "\n".join(lines)


@torch.no_grad()
def _figure(cfg: DictConfig, run_dirs: dict, rows: dict, path: Path) -> None:
    """Each set's images (a row per class) above the t-SNE of both sets' features under the
    pool's first proxy, computed together so that the panels share their axes."""
    device = resolve_device(cfg.device)
    sets = {name: SyntheticSet.load(d / "synthetic.pt", device) for name, d in run_dirs.items()}
    net = proxy_pool(cfg, load_real(cfg, device), device).first
    decoded = [s.decoded() for s in sets.values()]
    features = [net.embed(images).float() for images, _ in decoded]
    embedded = tsne(torch.cat(features), cfg.seed)
    margin = 0.05 * (embedded.max(0) - embedded.min(0))
    limits = list(zip(embedded.min(0) - margin, embedded.max(0) + margin, strict=True))
    fig, axes = plt.subplots(2, len(sets), figsize=(5 * len(sets), 10), squeeze=False)
    classes = max(int(labels.max()) for _, labels in decoded) + 1
    start = 0
    for col, (name, synthetic) in enumerate(sets.items()):
        labels = decoded[col][1].cpu().numpy()
        xy, start = embedded[start : start + len(labels)], start + len(labels)
        grid = synthetic.grid().permute(1, 2, 0).squeeze(-1).numpy()
        row = rows[name]
        top, bottom = axes[0][col], axes[1][col]
        top.imshow(grid, cmap="gray" if grid.ndim == 2 else None)
        top.set_title(f"{name}: accuracy {row['accuracy']:.2f} %", fontsize=11)
        top.axis("off")
        colours = "tab10" if classes <= 10 else "turbo"
        bottom.scatter(xy[:, 0], xy[:, 1], c=labels, cmap=colours, s=18, vmin=0, vmax=classes - 1)
        cmi = "not measured" if row["cmi_end"] is None else f"{row['cmi_end']:.3g}"
        bottom.set_title(f"t-SNE of the proxy's features; CMI of the set {cmi}", fontsize=10)
        bottom.set(xticks=[], yticks=[], xlim=limits[0], ylim=limits[1])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
