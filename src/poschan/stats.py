"""Seeds -> mean with a 95% confidence interval (the results contract's statistic)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats as _st


def summarize(values: Sequence[float], confidence: float = 0.95) -> dict:
    """``{"mean", "ci95", "n", "values"}`` with a Student-t interval; a single value gets a zero-width one."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarize needs at least one value")
    n = len(vals)
    mean = math.fsum(vals) / n
    if n == 1:
        return {"mean": mean, "ci95": [mean, mean], "n": 1, "values": vals}
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n, "values": vals}
