"""Training throughput of the quick networks under each execution path, against this machine's fp32 matmul rate.

Width-8 and width-16 paper ResNet-18s, one epoch of poschan.engine.fit over batches of 48 real Fashion-MNIST 3×3
canvases (84 px) per path: ``today`` (contiguous, eager: the path before poschan.execution), ``channels_last``,
``compile``, both; and ``pure``, eager Adam steps on the same batches preloaded (the engine's overhead). FLOPs per image are counted by torch's FlopCounterMode (forward and backward); the matmul
rate is the best of repeated 2048² fp32 GEMMs in this process, measured between the training repeats. All timings
are medians of interleaved repeats; the ratios are what to read on a noisy machine.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from common import timed
from poschan.data.sources import load_dataset
from poschan.data.stream import CanvasStream
from poschan.engine import fit
from poschan.models.registry import build_model

BATCH = 48
PATHS = {"today": (False, False), "channels_last": (True, False), "compile": (False, True),
         "channels_last+compile": (True, True)}


def matmul_rate(size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GEMM rate (FLOP/s) of ``repeats`` size×size products."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    return max(2 * size**3 / timed(lambda: a @ b) for _ in range(repeats))


def flops_per_image(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    probe = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(probe(x), y).backward()
    return counter.get_total_flops() / len(x)


def fit_loop(model: torch.nn.Module, stream: CanvasStream, layout: bool, compile: bool) -> Callable[[], None]:
    """One epoch of poschan.engine.fit (streamed canvases) on ``model`` in the given execution path."""
    def run() -> None:
        fit(model, stream, epochs=1, progress=False, memory_format="channels_last" if layout else "contiguous",
            compile=compile)

    run()  # warm-up (and compilation)
    return run


def pure_loop(model: torch.nn.Module, batches: list) -> Callable[[], None]:
    """Today's path without the engine: eager Adam steps on preloaded contiguous batches."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))

    def run() -> None:
        model.train()
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    run()
    return run


def medians(fns: dict[str, Callable[[], None]], repeats: int, rates: list[float]) -> dict[str, float]:
    """Median seconds of each function, run round-robin; a matmul rate measured after every round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn))
        rates.append(matmul_rate())
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--widths", default="8,16")
    args = ap.parse_args()
    data = load_dataset("fashion-mnist", "train", limit=BATCH * args.batches)
    stream = CanvasStream(data, "location", 3, BATCH, seed=0)
    batches = list(stream.epoch(0))
    images = BATCH * len(batches)
    rates = [matmul_rate()]
    for width in (int(w) for w in args.widths.split(",")):
        torch.manual_seed(0)
        base = build_model("resnet18-paper", 9, 1, width=width)
        flops = flops_per_image(base, *batches[0])
        loops = {name: fit_loop(copy.deepcopy(base), stream, *flags) for name, flags in PATHS.items()}
        loops["pure"] = pure_loop(copy.deepcopy(base), batches)
        t = medians(loops, args.repeats, rates)
        rate = statistics.median(rates)
        print(f"train_loop width {width}: {flops / 1e6:.0f} MFLOP per training image, fp32 matmul "
              f"{rate / 1e9:.0f} GFLOP/s (median of {len(rates)})")
        for name, seconds in t.items():
            ips = images / seconds
            print(f"  {name:<22} {ips:6.0f} img/s  {ips * flops / 1e9:6.1f} GFLOP/s  {ips * flops / rate:5.1%} of "
                  f"matmul  speed-up over today {t['today'] / seconds:.2f}x")
        print(f"  fit (today's path) / pure loop throughput: {t['pure'] / t['today']:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
