"""python -m cmidd.report <sweep dir>: writes report.md, runs.csv and the study's plots into it."""

import argparse
import sys
from pathlib import Path

from .plots import PLOTS
from .runs import read_sweep
from .tables import STUDIES, all_groups, runs_csv


def report(root: Path) -> list:
    """Write the report of the sweep in ``root``; returns the files written."""
    runs = read_sweep(root)
    studies = sorted({r.get("study") for r in runs if r.get("study")})
    skipped = sum(r.status.startswith("skipped") for r in runs)
    count = f"{sum(r.ok for r in runs)} of {len(runs)} runs finished"
    if skipped:
        count += (
            f", {skipped} skipped (combinations that do not apply: a method that takes no CMI "
            "term with cmi other than none, or a plug-in on a method it does not plug into)"
        )
    sections = [f"# Sweep {root.name}", "", count + ".", ""]
    for study in studies:
        if study in STUDIES:
            sections += [f"## {study}", "", STUDIES[study](runs), ""]
    problems = [r for r in runs if not r.ok and not r.status.startswith("skipped")]
    sections += [
        "## All runs (mean ± std in %; std over seeds where there are several)",
        "",
        all_groups(runs),
        "",
    ]
    if problems:
        sections += ["## Failed or missing runs", ""]
        sections += [f"- `{r.path.relative_to(root)}`: {r.status}" for r in problems] + [""]
    written = [root / "report.md", root / "runs.csv"]
    (root / "report.md").write_text("\n".join(sections))
    (root / "runs.csv").write_text(runs_csv(runs, root))
    for study in studies:
        for stem, plot in PLOTS.get(study, {}).items():
            plot(runs, root / f"{stem}.png")
            written.append(root / f"{stem}.png")
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cmidd.report", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a directory under multirun/")
    args = parser.parse_args(argv)
    try:
        written = report(args.sweep_dir)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
