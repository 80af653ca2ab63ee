"""Executor scaling: wall time of a whole gap study (``poschan gap-study``, smoke preset by default) on local worker
processes, and through a local Ray instance when ray is installed, against the same study run sequentially in one
process, both with all of torch's threads (the default) and with each job's share of the threads (``--workers N``:
the same numbers bit for bit, so that ratio is the parallel gain alone). Every run is the full command, start-up of
the workers (and of Ray) included; medians of round-robin repeats.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
from collections.abc import Callable
from importlib.util import find_spec

from common import timed
from poschan.cli import main as poschan
from poschan.config import build_config
from poschan.experiments.gap_study import Config
from poschan.measure.gap_study import variants


def study(preset: str, executor: str, workers: int) -> Callable[[], None]:
    """One gap study in a fresh output folder, its printed summary swallowed."""
    def run() -> None:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            code = poschan(["gap-study", "--preset", preset, "--no-progress", "--executor", executor,
                            "--workers", str(workers), "--out", f"{tmp}/out"])
        assert code == 0, f"gap-study --executor {executor} exited {code}"

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    runs = {"sequential": study(args.preset, "sequential", 1),
            "sequential-shared": study(args.preset, "sequential", args.workers),
            "local": study(args.preset, "local", args.workers)}
    if find_spec("ray") is not None:
        runs["ray"] = study(args.preset, "ray", args.workers)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(timed(run))
    t = {name: statistics.median(s) for name, s in times.items()}
    c = build_config(Config, "gap-study", args.preset)
    print(f"executor: gap-study --preset {args.preset}, {len(variants(c)) * len(c.seeds)} jobs, median of "
          f"{args.repeats} round-robin repeats; sequential {t['sequential']:.1f} s (all threads), "
          f"{t['sequential-shared']:.1f} s (--workers {args.workers}: 1/{args.workers} of the threads per job)")
    for name in [n for n in ("local", "ray") if n in runs]:
        print(f"  {name:<5} {args.workers} workers {t[name]:6.1f} s  wall time / sequential "
              f"{t[name] / t['sequential']:.2f} (speed-up {t['sequential'] / t[name]:.2f}x), / sequential with the "
              f"same threads per job {t[name] / t['sequential-shared']:.2f} "
              f"(speed-up {t['sequential-shared'] / t[name]:.2f}x)")


if __name__ == "__main__":
    main()
