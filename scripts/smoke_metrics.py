"""Run every experiment command on its smoke preset and write (or compare against) the metrics of each run.

    python scripts/smoke_metrics.py --write before.json     # before a change
    python scripts/smoke_metrics.py --compare before.json   # after it: exit 1 when any metric differs

A restructuring that moves code must leave every number unchanged: same seeds, same results.json metrics (numbers
equal to 1e-12, everything else equal). Besides the smoke runs, one quick condition: ``rank --preset quick``
(efficientnet-lite0's real weights on 2,000 Fashion-MNIST canvases, about a minute)."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

SMOKE = ["--preset", "smoke", "--no-progress"]
TOLERANCE = 1e-12


def _runs(tmp: Path) -> list[tuple[str, list[str]]]:
    checkpoint = str(tmp / "seg-train" / "seed0" / "checkpoint.pt")
    return [
        ("train", ["train"]),
        ("position-map", ["position-map"]),
        ("gap-study", ["gap-study"]),
        ("probe", ["probe"]),
        ("rank", ["rank"]),
        ("augshift", ["augshift"]),
        ("seg-train", ["seg-train"]),
        ("ablate", ["ablate", "--checkpoint", checkpoint]),
        ("attack", ["attack", "--checkpoint", checkpoint]),
        ("rank-quick", ["rank", "--preset", "quick"]),
    ]


def collect(only: set[str] | None = None) -> dict[str, dict]:
    """The metrics of every run (``only``: of these runs, and of the seg-train run that ablate and attack read)."""
    metrics = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        needed = only and only | ({"seg-train"} if only & {"ablate", "attack"} else set())
        for name, argv in _runs(tmp):
            if needed and name not in needed:
                continue
            out = tmp / name
            preset = [] if "--preset" in argv else SMOKE[:2]
            proc = subprocess.run([sys.executable, "-m", "poschan", *argv, *preset, *SMOKE[2:], "--out", str(out)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
            text = (out / "results.json").read_text().replace(tmp_name, "TMP")  # paths of this run's folder
            metrics[name] = json.loads(text)["metrics"]
            print(f"{name}: {len(metrics[name])} metrics", flush=True)
    return metrics


def _differences(before, after, path: str = "") -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        out = [f"{path}/{k}: missing after" for k in before if k not in after]
        out += [f"{path}/{k}: new after" for k in after if k not in before]
        for k in before:
            if k in after:
                out += _differences(before[k], after[k], f"{path}/{k}")
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (b, a) in enumerate(zip(before, after)) for d in _differences(b, a, f"{path}[{i}]")]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (before, after))
    if numbers and math.isclose(before, after, rel_tol=TOLERANCE, abs_tol=TOLERANCE):
        return []
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path, help="write the metrics of every smoke run to this JSON file")
    mode.add_argument("--compare", type=Path, help="compare the metrics of every smoke run with this file")
    parser.add_argument("--only", help="comma-separated run names (e.g. ablate,attack): these runs alone")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    metrics = collect(only)
    if args.write:
        args.write.write_text(json.dumps(metrics, indent=1, sort_keys=True))
        return 0
    before = {k: v for k, v in json.loads(args.compare.read_text()).items() if k in metrics}
    differences = _differences(before, metrics)
    added = [d for d in differences if d.endswith(": new after")]  # a new metric changes no number printed before
    changed = [d for d in differences if d not in added]
    for line in [*changed[:50], *added]:
        print(line)
    print(f"{len(changed)} changed or missing, {len(added)} new, in {sum(map(len, metrics.values()))} metrics of "
          f"{len(metrics)} runs")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
