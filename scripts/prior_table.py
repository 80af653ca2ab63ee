"""Markdown tables of a layout-prior sweep (scripts/prior_sweep.sh): reliance and region attack per prior.

Usage: python scripts/prior_table.py runs/seg [--n 25%] — reads ROOT/p<PRIOR>-<LAYOUT>/{train,ablate,attack}/results.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def ci(stat: dict, digits: int = 3) -> str:
    lo, hi = stat["ci95"]
    return f"{stat['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def load(run: Path, name: str) -> dict | None:
    path = run / name / "results.json"
    return json.loads(path.read_text())["metrics"] if path.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--fraction", type=float, default=0.25, help="the N (fraction of channels) of the tables")
    args = parser.parse_args()
    runs = sorted(p for p in args.root.glob("p*-*") if (p / "ablate").is_dir())
    print("| prior, layout | clean mIoU | N | ranked drop | random drop | ratio |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        prior, layout = run.name[1:].split("-", 1)
        ablate = load(run, "ablate")
        for row in ablate["reliance"]:
            ratio = "—" if row["drop_ratio"] is None else f"{row['drop_ratio']:.2f}"
            print(f"| {prior}, {layout} | {ci(ablate['miou_clean'])} | {row['n']} ({row['fraction']:.0%}) | "
                  f"{ci(row['ranked_drop'])} | {ci(row['random_drop'])} | {ratio} |")
    print()
    print("| prior, layout | region | method | drop inside | drop outside | selectivity |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        prior, layout = run.name[1:].split("-", 1)
        attack = load(run, "attack")
        if attack is None:
            continue
        channels = attack["channels"]
        for row in attack["attack"]:
            if row["n"] is not None and abs(row["n"] / channels - args.fraction) > 0.5 / channels:
                continue
            sel = "—" if row["selectivity"] is None else f"{row['selectivity']:.2f}"
            n = "pixels" if row["n"] is None else f"{row['n']}"
            print(f"| {prior}, {layout} | {row['region']} | {row['method']} (N={n}) | {ci(row['drop_in'])} | "
                  f"{ci(row['drop_out'])} | {sel} |")


if __name__ == "__main__":
    main()
