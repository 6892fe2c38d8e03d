"""``task=measure sets=[a,b,...]``: distilled sets from anywhere (``format=...``) side by side
under one protocol: each set's accuracy (test, and validation with a split), its CMI under the
measuring proxy in feature and probability space (a network none of them was optimized
against), and where it stands against random real images of the same IPC (DD-Ranking's IOR;
with a whole-dataset result of the same protocol, its HLR and LRS too). Every set is trained with
the same networks, batch order and augmentation (one stream), so differences are the sets'."""

import json
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from . import batching
from .cmi import SPACES, set_cmi
from .components import built, load_real, measuring_pool
from .errors import UserError
from .files import write_json
from .report.ddranking import label_robust
from .runtime import generator, resolve_device
from .synthetic import SyntheticSet
from .validate import check_device
from .visualize import set_labels

log = logging.getLogger(__name__)

STREAM = "measure"  # every set's evaluation networks and batches, so the comparison is paired


def measure(
    cfg: DictConfig,
    out_dir: Path,
    random_real: bool = True,
    whole: str = None,
    accuracy: bool = True,
) -> dict:
    """``accuracy=false``: the sets' CMI only (nothing is trained)."""
    paths = list(cfg.sets or ([cfg.synthetic] if cfg.get("synthetic") else []))
    if not paths:
        raise UserError("task=measure needs sets=[<a>,<b>,...] (or synthetic=<path>)")
    check_device(cfg.device)
    evaluator = built(lambda: instantiate(cfg.eval), cfg.eval, "eval") if accuracy else None
    reader = built(lambda: instantiate(cfg.format.file), cfg.format.file, "format.file")
    full = _whole_accuracy(whole)
    device = resolve_device(cfg.device)
    batching.from_config(cfg)
    real = load_real(cfg, device)
    pool = measuring_pool(cfg, real, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []

    def add(name: str, path: str, synthetic: SyntheticSet) -> None:
        rows.append(_measured(name, path, synthetic, evaluator, real, pool, cfg.seed))
        # Kept as it grows, marked unfinished until the scores are in.
        write_json(out_dir / "measure.json", {"status": "running", "rows": rows, "whole": whole})

    sets = []
    for name, path in zip(set_labels(paths), paths, strict=True):
        synthetic = reader.read(Path(path).expanduser(), real)
        sets.append(synthetic)
        add(name, str(path), synthetic)
    if random_real:
        for ipc in sorted({_ipc(s) for s in sets}):
            g = generator(cfg.seed, f"{STREAM}/random/{ipc}")
            add(f"random real, IPC {ipc}", None, SyntheticSet.from_real(real, ipc, g))
    _score(rows, full)
    write_json(out_dir / "measure.json", {"status": "finished", "rows": rows, "whole": whole})
    (out_dir / "report.md").write_text(table(rows) + "\n")
    log.info("measured %d sets:\n%s", len(paths), table(rows))
    log.info("results in %s", out_dir.resolve())
    return {"rows": rows}


def _ipc(synthetic: SyntheticSet) -> int:
    """Stored images per class (a multi-formulation set's storage, as DD-Ranking counts it)."""
    return int((synthetic.labels == synthetic.labels[0]).sum())


def _measured(name, path, synthetic, evaluator, real, pool, seed: int) -> dict:
    images, targets = synthetic.train_set()
    soft = {} if synthetic.relabel is None else {"soft_labels": synthetic.relabel}
    accuracy = {"-": {"mean": None, "std": None}}
    if evaluator is not None:
        lr = synthetic.learned_lr
        accuracy = evaluator(images, targets, real, seed, stream=STREAM, lr=lr, **soft)
    decoded, labels = synthetic.decoded()
    cmi = {
        space: None if pool is None else set_cmi(getattr(pool.first, attr), decoded, labels)
        for space, attr in SPACES.items()
    }
    first = next(iter(accuracy.values()))
    return {
        "set": name,
        "path": path,
        "format": getattr(synthetic, "meta", {}).get("format", "cmidd"),
        "ipc": _ipc(synthetic),
        "accuracy": accuracy,
        "test": first["mean"],
        "val": first.get("val", {}).get("mean"),
        "cmi": cmi,
        "soft": synthetic.targets is not None or synthetic.relabel is not None,
    }


def _whole_accuracy(whole):
    """The whole training split's test accuracy from a method=whole_dataset run's results.json
    (or its cached accuracy file), or None."""
    if whole is None:
        return None
    try:
        found = json.loads(Path(whole).expanduser().read_text())
        found = found.get("accuracy", found)
        return next(iter(found.values()))["mean"]
    except (OSError, ValueError, KeyError, StopIteration, AttributeError) as error:
        raise UserError(
            f"task.whole={whole} is not a whole-dataset result (results.json): {error}"
        ) from None


def _score(rows: list, full) -> None:
    """DD-Ranking's scores of each set against the random row of its IPC (and the whole split);
    HLR and LRS need a hard-label accuracy, which a soft-labelled set's row does not have."""
    random = {r["ipc"]: r["test"] for r in rows if r["path"] is None}
    for row in rows:
        if row["path"] is None or random.get(row["ipc"]) is None:
            continue
        base = random[row["ipc"]]
        hard = full is not None and not row["soft"]
        scored = label_robust(full, row["test"], base) if hard else None
        row["ior"] = row["test"] - base
        row["hlr"] = None if scored is None else scored["hlr"]
        row["lrs"] = None if scored is None else scored["lrs"]


def table(rows: list) -> str:
    """One row per set: accuracy (%), CMI per space, and DD-Ranking's IOR / HLR (points), LRS."""

    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}"

    def num(x, f="{:.3g}"):
        return "-" if x is None else f.format(x)

    head = "| set | format | IPC | test | val | CMI feature | CMI probability | IOR | HLR | LRS |"
    lines = [head, "|" + " --- |" * 10]
    for r in rows:
        spread = next(iter(r["accuracy"].values()))["std"]
        cells = [
            r["set"],
            r["format"] if r["path"] else "real",
            r["ipc"],
            "-" if spread is None else f"{pct(r['test'])} ± {100 * spread:.2f}",
            pct(r["val"]),
            num(r["cmi"]["feature"]),
            num(r["cmi"]["probability"]),
            num(r.get("ior") and 100 * r["ior"], "{:+.2f}"),
            num(r.get("hlr") and 100 * r["hlr"], "{:+.2f}"),
            num(r.get("lrs"), "{:.4f}"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
