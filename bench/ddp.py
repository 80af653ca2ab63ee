"""DistributedDataParallel scaling: seconds per training epoch of ``poschan train`` under ``torchrun
--nproc_per_node=N`` (gloo on the CPU; each rank one N-th of the cores, its rows of every batch, BatchNorm
synchronised) against one process using all the cores, on the same batches. The epoch times come from the runs'
own ``metrics.csv`` (fit's clock: start-up, data loading and evaluation excluded); medians of round-robin repeats.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIG = "width: {width}\nepochs: 2\nbatch_size: 48\ntrain_size: {images}\ntest_size: 100\nseeds: [0]\n"


def epoch_seconds(ranks: int, config: Path, threads: int) -> float:
    """Median seconds per epoch of one ``poschan train`` run on ``ranks`` processes of ``threads`` threads each."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        command = ["-m", "poschan", "train", "--preset", "smoke", "--config", str(config), "--no-progress",
                   "--out", str(out)]
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
                    if ranks > 1 else [sys.executable])
        subprocess.run([*launcher, *command], check=True, capture_output=True,
                       env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        with open(out / "seed0" / "metrics.csv") as fh:
            return statistics.median(float(row["seconds"]) for row in csv.DictReader(fh))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--width", type=int, default=8)
    ap.add_argument("--images", type=int, default=2400, help="training canvases per epoch")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.yaml"
        config.write_text(CONFIG.format(width=args.width, images=args.images))
        one, many = [], []
        for _ in range(args.repeats):
            one.append(epoch_seconds(1, config, cores))
            many.append(epoch_seconds(args.ranks, config, max(1, cores // args.ranks)))
    t1, tn = statistics.median(one), statistics.median(many)
    print(f"ddp: train, width {args.width}, {args.images} canvases per epoch, batch 48, {cores} cores; median of "
          f"{args.repeats} round-robin repeats")
    print(f"  one process ({cores} threads)        {t1:6.2f} s per epoch  {args.images / t1:7.1f} img/s")
    print(f"  torchrun {args.ranks} ranks ({max(1, cores // args.ranks)} thread(s) each) {tn:6.2f} s per epoch  "
          f"{args.images / tn:7.1f} img/s  time / one process {tn / t1:.2f} (speed-up {t1 / tn:.2f}x)")


if __name__ == "__main__":
    main()
