"""Helpers for benchmarks: interleaved repeats, medians, ratios in one process."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def interleaved(candidate: Callable[[], object], baseline: Callable[[], object], repeats: int = 5,
                warmup: int = 1) -> tuple[float, float]:
    """Median seconds of ``candidate`` and ``baseline``, run alternately so machine noise hits both alike."""
    for _ in range(warmup):
        candidate()
        baseline()
    cand, base = [], []
    for _ in range(repeats):
        cand.append(timed(candidate))
        base.append(timed(baseline))
    return statistics.median(cand), statistics.median(base)
