"""Run every experiment command on its smoke preset and write (or compare against) the metrics of each run.

    python scripts/smoke_metrics.py --write before.json     # before a change
    python scripts/smoke_metrics.py --compare before.json   # after it: exit 1 when any metric differs

A restructuring that moves code must leave every number unchanged: same seeds, same results.json metrics."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

SMOKE = ["--preset", "smoke", "--no-progress"]


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
    ]


def collect() -> dict[str, dict]:
    metrics = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, argv in _runs(tmp):
            out = tmp / name
            proc = subprocess.run([sys.executable, "-m", "poschan", *argv, *SMOKE, "--out", str(out)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{name} failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}")
            metrics[name] = json.loads((out / "results.json").read_text())["metrics"]
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
    return [] if before == after else [f"{path}: {before!r} -> {after!r}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path, help="write the metrics of every smoke run to this JSON file")
    mode.add_argument("--compare", type=Path, help="compare the metrics of every smoke run with this file")
    args = parser.parse_args()
    metrics = collect()
    if args.write:
        args.write.write_text(json.dumps(metrics, indent=1, sort_keys=True))
        return 0
    differences = _differences(json.loads(args.compare.read_text()), metrics)
    added = [d for d in differences if d.endswith(": new after")]  # a new metric changes no number printed before
    changed = [d for d in differences if d not in added]
    for line in [*changed[:50], *added]:
        print(line)
    print(f"{len(changed)} changed or missing, {len(added)} new, in {sum(map(len, metrics.values()))} metrics of "
          f"{len(metrics)} runs")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
