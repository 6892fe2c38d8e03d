"""``task=visualize sets=[a.pt,b.pt]``: the paper's figures of synthetic sets.

- ``tsne.png`` (Figures 1 and 7): scikit-learn's t-SNE of each set's images under a proxy of the
  pool, in feature space (the proxy's penultimate features) and in probability space (softmax
  of its logits): one panel per set and space, coloured by class, class centroids marked, the
  set's CMI in that space in the title. All sets of a space share one embedding, so their
  panels are comparable; the embedding is deterministic for a seed.
- ``grids.png`` (Figure 4), with two sets: both image grids side by side and their per-pixel
  absolute difference, since the paper's point is that CMI barely changes the pixels.
- ``visualize.json``: the CMI of each set in each space, and the pixel difference.
"""

import json
import logging
from pathlib import Path

import matplotlib
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from . import batching
from .checkpoint import flatten
from .cmi import empirical_cmi
from .components import built, load_real, proxy_pool
from .errors import UserError
from .files import write_json
from .neutral import HOW
from .runtime import resolve_device
from .validate import check_device

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)
SPACES = {"feature": "embed", "probability": "forward"}


@torch.no_grad()
def _outputs(net, images: torch.Tensor, space: str) -> torch.Tensor:
    return getattr(net, SPACES[space])(images).float()


def tsne(points: torch.Tensor, seed: int):
    from sklearn.manifold import TSNE

    perplexity = float(min(30, max(2, len(points) // 4)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        points.cpu().double().numpy()
    )


def tsne_figure(names: list, sets: list, net, seed: int, path: Path) -> dict:
    """The t-SNE panels of ``sets`` (decoded images, labels) under ``net``; their CMI per space."""
    fig, axes = plt.subplots(2, len(sets), figsize=(4 * len(sets), 8), squeeze=False)
    cmis = {}
    for row, space in enumerate(SPACES):
        outputs = [_outputs(net, images, space) for images, _ in sets]
        space_outputs = outputs if space == "feature" else [o.softmax(1) for o in outputs]
        embedded = tsne(torch.cat(space_outputs), seed)
        start = 0
        for col, (name, (_, labels), out) in enumerate(zip(names, sets, outputs, strict=True)):
            xy, start = embedded[start : start + len(labels)], start + len(labels)
            cmi = empirical_cmi(out, labels).item()  # Eq. 10 on the outputs, as the term does
            cmis.setdefault(name, {})[space] = cmi
            ax, classes = axes[row][col], labels.cpu().numpy()
            ax.scatter(xy[:, 0], xy[:, 1], c=classes, cmap="tab10", s=12, vmin=0, vmax=9)
            for c in sorted(set(classes.tolist())):
                centre = xy[classes == c].mean(0)
                ax.scatter(
                    *centre,
                    marker="X",
                    s=120,
                    c=[c],
                    cmap="tab10",
                    vmin=0,
                    vmax=9,
                    edgecolors="black",
                )
            ax.set_title(f"{name}\n{space} space, CMI {cmi:.4g}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return cmis


def grids_figure(names: list, synthetic: list, path: Path) -> dict:
    """Two sets' grids (one row per class) and their per-pixel absolute difference."""
    a, b = (s.denormalized().cpu() for s in synthetic)
    if a.shape != b.shape:
        raise UserError(
            f"sets={names}: the two sets differ in shape ({tuple(a.shape)} vs "
            f"{tuple(b.shape)}); the pixel difference needs equal sets"
        )
    diff = (a - b).abs()
    peak = diff.max().clamp_min(1e-12)
    panels = [(names[0], a), (names[1], b), (f"|difference|, scaled by 1/{peak:.3g}", diff / peak)]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.5))
    for ax, (title, images) in zip(axes, panels, strict=True):
        grid = synthetic[0].grid(images).permute(1, 2, 0).squeeze(-1)
        ax.imshow(grid.numpy(), cmap="gray" if grid.ndim == 2 else None)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"mean_abs": diff.mean().item(), "max_abs": diff.max().item()}


# The settings that name a run first, when runs differ in them (then any others, by name).
NAMING = ("method.name", "plugin.name", "proxy.name", "cmi.weight", "ipc", "seed")


def set_labels(paths: list) -> list:
    """A label per set that tells it from the others: up to three settings in which the runs
    that made them differ (from their results.json; ``NAMING`` first), else the shortest ends of
    their paths that differ."""
    configs = [Path(p).parent / "results.json" for p in paths]
    if len(paths) > 1 and all(c.is_file() for c in configs):
        flat = [flatten(json.loads(c.read_text()).get("config", {})) for c in configs]
        keys = sorted(
            (
                k
                for k in set().union(*flat)
                if len({repr(f.get(k)) for f in flat}) > 1 and not k.startswith(HOW)
            ),
            key=lambda k: (k not in NAMING, NAMING.index(k) if k in NAMING else 0, k),
        )
        labels = [", ".join(f"{k}={f.get(k)}" for k in keys[:3]) for f in flat]
        if keys and len(set(labels)) == len(labels):
            return labels
    parts = [Path(p).with_suffix("").parts for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(p) for p in paths]


def visualize(cfg: DictConfig, out_dir: Path, proxy_index: int = 0) -> dict:
    """Draw the figures of ``sets`` into ``out_dir`` (and to W&B when logging), embedding them
    with proxy ``proxy_index`` of the pool."""
    if not cfg.get("sets"):
        raise UserError("task=visualize needs sets=[<a.pt>,<b.pt>,...] (one or more synthetic.pt)")
    check_device(cfg.device)
    device = resolve_device(cfg.device)
    batching.from_config(cfg)
    paths = [Path(p).expanduser() for p in cfg.sets]
    reader = built(lambda: instantiate(cfg.format.file), cfg.format.file, "format.file")
    real = load_real(cfg, device)
    synthetic = [reader.read(p, real) for p in paths]
    pool = proxy_pool(cfg, real, device)
    if not 0 <= proxy_index < len(pool):
        raise UserError(
            f"task.proxy_index={proxy_index} is invalid: the pool has "
            f"{len(pool)} proxies (proxy.pool_size)"
        )
    net = pool.nets[proxy_index]
    names = set_labels(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {
        "sets": [str(p) for p in paths],
        "proxy": cfg.proxy.name,
        "cmi": tsne_figure(
            names, [s.decoded() for s in synthetic], net, cfg.seed, out_dir / "tsne.png"
        ),
    }
    if len(synthetic) == 2:
        results["pixel_difference"] = grids_figure(names, synthetic, out_dir / "grids.png")
    write_json(out_dir / "visualize.json", results)
    logger = instantiate(cfg.logger)(
        config={"task": "visualize", "sets": results["sets"]},
        out_dir=out_dir,
        labels={"group": None, "tags": []},
    )
    for figure in ("tsne", "grids"):
        if (out_dir / f"{figure}.png").exists():
            logger.image(figure, out_dir / f"{figure}.png", step=0)
    logger.finish()
    log.info("figures in %s", out_dir.resolve())
    return results
