"""Training throughput of the quick networks under each execution path, against this machine's matmul rates.

Width-8 and width-16 paper ResNet-18s, one epoch of poschan.engine.fit over batches of 48 real Fashion-MNIST 3×3
canvases (84 px) per path: ``today`` (contiguous, eager, fp32: the path before poschan.execution), ``channels_last``
(fp32), ``bf16`` (channels_last, bf16 autocast), each of these compiled, and ``default`` (what ``make demo``'s
gap-study quick trains with here: its memory format, its precision resolved for this CPU, ``--compile auto`` for a
quick-sized run); and
``pure``, eager Adam steps on the same batches preloaded (the engine's overhead). bf16 paths run only where the CPU
computes bf16 natively (poschan.execution.native_bf16). FLOPs per image are counted by torch's FlopCounterMode
(forward and backward); the matmul rates are the best of repeated 2048² GEMMs (fp32 and bf16) in this process,
measured between the training repeats. A compiled path's compile time is its first epoch's time less an eager
epoch's, and its break-even the number of steps whose savings repay it; both depend on torch's on-disk inductor
cache (cold on a fresh machine: tens of seconds; warm after an earlier run: seconds). All timings are medians of
interleaved repeats; the ratios are what to read on a noisy machine.
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
from poschan.config import build_config
from poschan.data.sources import load_dataset
from poschan.data.stream import CanvasStream
from poschan.engine import fit
from poschan.execution import COMPILE_MIN_STEPS, cpu_capability, native_bf16, resolve_compile, resolve_precision
from poschan.experiments.gap_study import Config
from poschan.models.registry import build_model

BATCH = 48
CPU = torch.device("cpu")
QUICK_STEPS = 667  # a quick semantic run: 4 epochs of 8,000 images in batches of 48, what --compile auto sees
_QUICK = build_config(Config, "gap-study", "quick").fit_options(CPU)  # what `make demo` trains with here
DEFAULT = (_QUICK["memory_format"], _QUICK["precision"], resolve_compile(_QUICK["compile"], QUICK_STEPS))
PATHS = {  # name -> (memory format, precision, compile)
    "today": ("contiguous", "fp32", False), "channels_last": ("channels_last", "fp32", False),
    "bf16": ("channels_last", "bf16", False), "channels_last+compile": ("channels_last", "fp32", True),
    "bf16+compile": ("channels_last", "bf16", True), "default": DEFAULT,
}


def matmul_rate(size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """Best GEMM rate (FLOP/s) of ``repeats`` size×size products in ``dtype``."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    return max(2 * size**3 / timed(lambda: a @ b) for _ in range(repeats))


def flops_per_image(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    probe = copy.deepcopy(model)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(probe(x), y).backward()
    return counter.get_total_flops() / len(x)


def fit_loop(model: torch.nn.Module, stream: CanvasStream, memory_format: str, precision: str,
             compile: bool) -> tuple[Callable[[], None], float]:
    """One epoch of poschan.engine.fit (streamed canvases) on ``model`` in the given execution path, and the
    seconds of its first epoch (with the compilation)."""
    def run() -> None:
        fit(model, stream, epochs=1, progress=False, memory_format=memory_format, precision=precision,
            compile=compile)

    return run, timed(run)


def pure_loop(model: torch.nn.Module, batches: list) -> Callable[[], None]:
    """Today's path without the engine: eager (fused) Adam steps on preloaded contiguous batches."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999), fused=True)  # as engine.fit

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
    bf16 = native_bf16(CPU)
    paths = {name: flags for name, flags in PATHS.items() if bf16 or flags[1] != "bf16"}
    rates = [matmul_rate()]
    bf16_rate = matmul_rate(dtype=torch.bfloat16) if bf16 else None
    print(f"train_loop: CPU {cpu_capability()}, {torch.get_num_threads()} threads; native bf16: {bf16}; fp32 "
          f"matmul {rates[0] / 1e9:.0f} GFLOP/s" + (f", bf16 matmul {bf16_rate / 1e9:.0f} GFLOP/s "
                                                   f"({bf16_rate / rates[0]:.2f}x)" if bf16_rate else ""))
    print(f"  default path here (gap-study quick): {DEFAULT[0]}, precision {DEFAULT[1]} (auto would resolve to "
          f"{resolve_precision('auto', CPU)}), compile {DEFAULT[2]} (auto: runs of >= {COMPILE_MIN_STEPS:,} steps; "
          f"a quick run has {QUICK_STEPS})")
    for width in (int(w) for w in args.widths.split(",")):
        torch.manual_seed(0)
        base = build_model("resnet18-paper", 9, 1, width=width)
        flops = flops_per_image(base, *batches[0])
        loops, first = {}, {}
        for name, flags in paths.items():
            loops[name], first[name] = fit_loop(copy.deepcopy(base), stream, *flags)
        loops["pure"] = pure_loop(copy.deepcopy(base), batches)
        t = medians(loops, args.repeats, rates)
        rate = statistics.median(rates)
        print(f"train_loop width {width}: {flops / 1e6:.0f} MFLOP per training image, fp32 matmul "
              f"{rate / 1e9:.0f} GFLOP/s (median of {len(rates)})")
        for name, seconds in t.items():
            ips = images / seconds
            print(f"  {name:<22} {ips:6.0f} img/s  {ips * flops / 1e9:6.1f} GFLOP/s  {ips * flops / rate:5.1%} of "
                  f"fp32 matmul  speed-up over today {t['today'] / seconds:.2f}x, over channels_last "
                  f"{t['channels_last'] / seconds:.2f}x")
        for name in (n for n in paths if paths[n][2]):
            eager = name.removesuffix("+compile")
            saved = (t[eager] - t[name]) / len(batches)  # seconds per step
            cost = first[name] - t[name]
            even = f"break-even after {cost / saved:,.0f} steps" if saved > 0 else "never pays (no step is faster)"
            print(f"  compile {eager}: {cost:.0f} s to compile, {saved * 1e3:+.1f} ms per step saved: {even}")
        print(f"  fit (today's path) / pure loop throughput: {t['pure'] / t['today']:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
