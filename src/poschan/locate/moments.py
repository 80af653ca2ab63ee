"""Streaming, mergeable per-channel (co-)moments in float64 (Chan, Golub & LeVeque 1979 pairwise updates).

Hand-written: neither torch nor numpy has a streaming, mergeable per-channel (co-)moment accumulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

_SD_FLOOR = 1e-12


@dataclass
class DiffSums:
    """Per-channel count, sum and sum of absolute values of paired differences."""

    n: int
    total: Tensor
    total_abs: Tensor

    @classmethod
    def zero(cls, channels: int) -> DiffSums:
        return cls(0, torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64))

    @classmethod
    def of(cls, d: Tensor) -> DiffSums:
        d = d.double()
        return cls(d.shape[0], d.sum(0), d.abs().sum(0))

    def __add__(self, other: DiffSums) -> DiffSums:
        return DiffSums(self.n + other.n, self.total + other.total, self.total_abs + other.total_abs)

    @property
    def mean(self) -> Tensor:
        return self.total / max(self.n, 1)

    @property
    def mean_abs(self) -> Tensor:
        return self.total_abs / max(self.n, 1)


@dataclass
class Moments:
    """Per-channel count, mean and sum of squared deviations from the mean (``m2``)."""

    n: int
    mean: Tensor
    m2: Tensor

    @classmethod
    def zero(cls, channels: int) -> Moments:
        return cls(0, torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64))

    @classmethod
    def of(cls, x: Tensor) -> Moments:
        """The moments of the rows of ``x`` (N, C)."""
        x = x.double()
        if x.shape[0] == 0:
            return cls.zero(x.shape[1])
        mean = x.mean(0)
        return cls(x.shape[0], mean, ((x - mean) ** 2).sum(0))

    def __add__(self, other: Moments) -> Moments:
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * (other.n / n), self.m2 + other.m2 + delta ** 2 * (self.n * other.n / n))

    @property
    def variance(self) -> Tensor:
        """Population variance (divided by n)."""
        return self.m2 / max(self.n, 1)


@dataclass
class CoMoments:
    """Per-channel count, means of both pair members and sum of their co-deviations ``c`` = Σ (a − ā)(b − b̄)."""

    n: int
    mean_a: Tensor
    mean_b: Tensor
    c: Tensor

    @classmethod
    def zero(cls, channels: int) -> CoMoments:
        z = torch.zeros(channels, dtype=torch.float64)
        return cls(0, z, z.clone(), z.clone())

    @classmethod
    def of(cls, a: Tensor, b: Tensor) -> CoMoments:
        """The co-moments of the row pairs (a[i], b[i]) of two (N, C) tensors."""
        a, b = a.double(), b.double()
        if a.shape[0] == 0:
            return cls.zero(a.shape[1])
        ma, mb = a.mean(0), b.mean(0)
        return cls(a.shape[0], ma, mb, ((a - ma) * (b - mb)).sum(0))

    def __add__(self, other: CoMoments) -> CoMoments:
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        da, db = other.mean_a - self.mean_a, other.mean_b - self.mean_b
        w = other.n / n
        return CoMoments(n, self.mean_a + da * w, self.mean_b + db * w, self.c + other.c + da * db * (self.n * w))

    def joint_mean_covariance(self) -> Tensor:
        """mean (a − μ)(b − μ) with the joint mean μ = (ā + b̄)/2 (Esser et al.): c/n − (ā − b̄)²/4."""
        return self.c / max(self.n, 1) - (self.mean_a - self.mean_b) ** 2 / 4


def standardised_difference(group: Moments, rest: Moments) -> Tensor:
    """Cohen's d per channel: (mean of group − mean of rest) / pooled within-group SD (floored at 1e-12)."""
    dof = max(group.n + rest.n - 2, 1)
    sd = ((group.m2 + rest.m2) / dof).sqrt().clamp_min(_SD_FLOOR)
    return (group.mean - rest.mean) / sd


def region_cells(grid: int) -> dict[str, Tensor]:
    """Boolean (k²,) masks (row-major cells) of the cells whose centre lies in each region of REGIONS."""
    k = torch.arange(grid)
    row, col = (t.flatten() for t in torch.meshgrid(k, k, indexing="ij"))
    x2, y2 = 2 * col + 1 - grid, 2 * row + 1 - grid  # 2k × (centre − 1/2): exact integers
    left, right, top, bottom = x2 < 0, x2 > 0, y2 < 0, y2 > 0
    return {"left": left, "right": right, "top": top, "bottom": bottom,
            "center": (2 * x2.abs() < grid) & (2 * y2.abs() < grid),
            "q1": top & left, "q2": top & right, "q3": bottom & left, "q4": bottom & right}


def dimension_counts(s_position: float, s_semantic: float, channels: int) -> dict:
    """Esser et al.'s estimate of how many of ``channels`` dimensions encode each factor (see the module doc)."""
    share = torch.softmax(torch.tensor([s_position, s_semantic, 1.0], dtype=torch.float64), 0)
    position, semantic = (math.floor(float(p) * channels) for p in share[:2])
    counts = {"position": position, "semantic": semantic, "residual": channels - position - semantic}
    return {**counts, "percent": {k: round(100 * v / channels, 1) for k, v in counts.items()},
            "factor_scores": {"position": s_position, "semantic": s_semantic}}
