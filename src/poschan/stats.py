"""Estimates with 95% intervals that stay inside their metric's range, and paired comparisons with p-values.

Every estimate is ``{"mean", "ci95", "n", "values", "range", "method"}``: ``values`` are the per-unit estimates
(one per training seed, ranking seed or random draw), ``mean`` their mean, ``range`` the metric's range (null for
an unbounded side) and ``method`` names how the interval was computed and which sources of variation it covers. Data come as *groups*: one array per unit, holding one row
per test item (an image, a canvas, a channel). A metric is a function of the mean of its group's rows
(accuracy: the mean of 0/1 rows; mIoU: a function of the mean per-image confusion matrix), so resampling items
is resampling rows.

- several units: a two-level percentile bootstrap, units first, then items within each unit;
- one unit: ``scipy.stats.bootstrap`` over items (BCa), or Wilson's score interval for a proportion;
- a sample without any variation: Wilson over all items for a proportion (a paired difference of 0/1 outcomes
  is bounded by the discordant share), else the metric's whole range, said so in ``method``.

Percentile intervals lie inside the range of the resampled metric, hence inside the metric's range.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as _st

Metric = Callable[[np.ndarray], np.ndarray]  # item means (..., d) -> metric (...)
RESAMPLES = 4000
_DISTINCT_ROWS = 256  # at most this many distinct rows: resample their counts (a multinomial) instead of indices
_CHUNK = 250


def _mean_column(means: np.ndarray) -> np.ndarray:
    return means[..., 0]


def _as_groups(groups: Sequence) -> list[np.ndarray]:
    out = []
    for g in groups:
        a = np.asarray(g, dtype=np.float64)
        a = a.reshape(len(a), -1)
        if len(a) == 0:
            raise ValueError("every group needs at least one item")
        out.append(a)
    if not out:
        raise ValueError("an estimate needs at least one group")
    if len({a.shape[1] for a in out}) != 1:
        raise ValueError("every group's rows must have the same width")
    return out


def _resampled_means(rows: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` bootstrap resamples of the item mean of ``rows`` (n, d) -> (count, d)."""
    n = len(rows)
    distinct, tally = np.unique(rows, axis=0, return_counts=True)
    if len(distinct) <= _DISTINCT_ROWS:  # same distribution as resampling indices, far cheaper for 0/1 data
        return rng.multinomial(n, tally / n, size=count) @ distinct / n
    out = np.empty((count, rows.shape[1]))
    for start in range(0, count, _CHUNK):  # how often each item is drawn (chunk, n), times the rows: no (chunk, n, d)
        size = min(_CHUNK, count - start)
        idx = rng.integers(0, n, size=(size, n)) + n * np.arange(size)[:, None]
        out[start:start + size] = np.bincount(idx.ravel(), minlength=size * n).reshape(size, n) @ rows / n
    return out


def _two_level(groups: list[np.ndarray], metric: Metric, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Two-level bootstrap distribution of the mean over units of ``metric(item mean)``.

    Written here because scipy.stats.bootstrap resamples one level only: each replicate draws units with
    replacement, then items within each drawn unit (Davison & Hinkley 1997, sec. 3.8).
    """
    units = len(groups)
    per_unit = np.stack([metric(_resampled_means(g, resamples, rng)) for g in groups])  # (units, resamples)
    drawn = rng.integers(0, units, size=(resamples, units))
    # slot k of replicate b uses item resample (b + k) mod resamples: a seed drawn twice gets independent resamples
    column = (np.arange(resamples)[:, None] + np.arange(units)[None, :]) % resamples
    return per_unit[drawn, column].mean(axis=1)


def _one_level(rows: np.ndarray, metric: Metric, resamples: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, tuple[float, float] | None]:
    """scipy's BCa bootstrap over the items of one unit: (bootstrap distribution, interval or None if undefined)."""
    n = len(rows)

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        return metric(rows[idx.astype(np.intp)].mean(axis=axis if axis >= 0 else idx.ndim - 1))

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", _st.DegenerateDataWarning)  # handled: a nan interval falls back
        res = _st.bootstrap((np.arange(n),), statistic, n_resamples=resamples, method="BCa", batch=_CHUNK,
                            random_state=rng, vectorized=True)
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return np.asarray(res.bootstrap_distribution), (None if np.isnan(lo) or np.isnan(hi) else (lo, hi))


def _sign_p(dist: np.ndarray, null: float) -> float:
    """Two-sided bootstrap p-value of H0 "estimate = null": the smaller tail share beyond ``null``, doubled."""
    b = len(dist)
    tail = min(int(np.sum(dist <= null)), int(np.sum(dist >= null)))
    return min(1.0, 2 * (tail + 1) / (b + 1))


def _is_binary(groups: list[np.ndarray]) -> bool:
    return all(np.isin(g, (0.0, 1.0)).all() for g in groups)


def _wilson(successes: int, trials: int) -> tuple[float, float]:
    ci = _st.binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _estimate(gs: list[np.ndarray], fn: Metric, bounds: tuple[float, float], unit: str, item: str,
              resamples: int, seed: int, kind: str) -> tuple[dict, np.ndarray | None]:
    """The estimate and its bootstrap distribution (None where no bootstrap ran or it showed no variation).

    ``kind`` is "proportion" (0/1 rows, the mean), "paired" (two 0/1 columns, their difference) or "other".
    """
    values = [float(fn(g.mean(axis=0))) for g in gs]
    mean = float(np.mean(values))
    rng = np.random.default_rng(seed)
    out: dict = {"mean": mean, "ci95": None, "n": len(values), "values": values,
                 "range": [float(b) if np.isfinite(b) else None for b in bounds]}
    dist = None
    if len(gs) == 1 and kind == "proportion":
        out["ci95"] = list(_wilson(int(gs[0].sum()), len(gs[0])))
        out["method"] = (f"Wilson score interval over {len(gs[0])} {item} (one of the {unit}: their variation "
                         "not covered)")
    elif len(gs) == 1:
        dist, ci = _one_level(gs[0], fn, resamples, rng)
        if ci is not None:
            out["ci95"] = list(ci)
            out["method"] = (f"BCa bootstrap over {len(gs[0])} {item} ({resamples} resamples; one of the {unit}: "
                             "their variation not covered)")
    else:
        dist = _two_level(gs, fn, resamples, rng)
        out["ci95"] = [float(np.quantile(dist, 0.025)), float(np.quantile(dist, 0.975))]
        out["method"] = (f"two-level percentile bootstrap: {len(gs)} {unit}, then {item} within each "
                         f"({resamples} resamples); covers {unit} and {item}")
    if dist is not None and np.ptp(dist) == 0:
        dist = None
    if out["ci95"] is None or out["ci95"][1] - out["ci95"][0] <= 0:
        out["ci95"], out["method"] = _without_variation(gs, bounds, unit, item, kind)
    # a percentile interval can, for very skewed data, miss the mean of the units; the contract keeps it inside
    out["ci95"] = [min(out["ci95"][0], mean), max(out["ci95"][1], mean)]
    return out, dist


def _kind(gs: list[np.ndarray], metric: Metric | None) -> str:
    if metric is None and gs[0].shape[1] == 1 and _is_binary(gs):
        return "proportion"
    return "other"


def estimate(groups: Sequence, metric: Metric | None = None, *, bounds: tuple[float, float],
             unit: str = "training seeds", item: str = "test items", resamples: int = RESAMPLES,
             seed: int = 0) -> dict:
    """Estimate ``metric`` (default: the mean of one-column rows) per group and its 95% interval.

    ``unit``/``item`` name the two sources of variation the interval covers (e.g. "ranking seeds", "images");
    ``bounds`` is the metric's range.
    """
    gs = _as_groups(groups)
    return _estimate(gs, metric or _mean_column, bounds, unit, item, resamples, seed, _kind(gs, metric))[0]


def _without_variation(gs: list[np.ndarray], bounds: tuple[float, float], unit: str, item: str,
                       kind: str) -> tuple[list[float], str]:
    n = sum(len(g) for g in gs)
    if kind == "proportion":
        k = int(sum(g.sum() for g in gs))
        return list(_wilson(k, n)), (f"Wilson score interval over all {n} {item} pooled (no variation between "
                                     f"{unit} or {item} to bootstrap)")
    if kind == "paired":
        up, down = _discordant(gs)
        (up_lo, up_hi), (down_lo, down_hi) = _wilson(up, n), _wilson(down, n)
        return [up_lo - down_hi, up_hi - down_lo], (
            f"difference of Wilson intervals of the two discordant shares ({up} and {down} of {n} {item} "
            "pooled): no variation to bootstrap")
    return list(bounds), f"the metric's whole range: no variation between {unit} or {item} to estimate one"


def _discordant(gs: list[np.ndarray]) -> tuple[int, int]:
    """Items with a=1, b=0 and items with a=0, b=1, over all groups."""
    return (int(sum(((g[:, 0] == 1) & (g[:, 1] == 0)).sum() for g in gs)),
            int(sum(((g[:, 0] == 0) & (g[:, 1] == 1)).sum() for g in gs)))


def proportion(outcomes: Sequence, **kw) -> dict:
    """Accuracy-like estimate from per-unit 0/1 outcomes (one array of test items per unit), inside [0, 1]."""
    return estimate(outcomes, bounds=(0.0, 1.0), **kw)


def _joined(a: Sequence, b: Sequence, metric: Metric | None) -> tuple[list[np.ndarray], Metric, Metric]:
    """Unit i's rows of a and b side by side, and the metric of each side of a joined row mean."""
    ga, gb = _as_groups(a), _as_groups(b)
    if [g.shape for g in ga] != [g.shape for g in gb]:
        raise ValueError("a paired comparison needs the same units and items on both sides")
    d, fn = ga[0].shape[1], metric or _mean_column
    return ([np.concatenate([x, y], axis=1) for x, y in zip(ga, gb)],
            lambda means: fn(means[..., :d]), lambda means: fn(means[..., d:]))


def paired_difference(a: Sequence, b: Sequence, metric: Metric | None = None, *, bounds: tuple[float, float],
                      unit: str = "training seeds", item: str = "test items", resamples: int = RESAMPLES,
                      seed: int = 0) -> dict:
    """``metric(a) - metric(b)`` on the same units and items, with its interval and a two-sided p-value.

    ``a[i]`` and ``b[i]`` hold unit i's items in the same order; ``bounds`` is the range of the difference
    (e.g. (-1, 1) for accuracies). The p-value comes from the resamples that give the interval (so it is below
    0.05 exactly when the interval excludes 0); without any variation to resample, 0/1 outcomes get McNemar's
    exact test over the pooled discordant items.
    """
    joined, left, right = _joined(a, b, metric)
    kind = "paired" if metric is None and joined[0].shape[1] == 2 and _is_binary(joined) else "other"
    out, dist = _estimate(joined, lambda m: left(m) - right(m), bounds, unit, item, resamples, seed, kind)
    if dist is not None:
        out["p_value"], out["test"] = _sign_p(dist, 0.0), "two-sided bootstrap p-value of a zero difference"
    elif kind == "paired":
        up, down = _discordant(joined)
        out["p_value"] = float(_st.binomtest(up, up + down).pvalue) if up + down else 1.0
        out["test"] = "McNemar's exact test over the pooled discordant items"
    else:
        out["p_value"], out["test"] = 1.0, "no variation to test against"
    return out


def ratio(a: Sequence, b: Sequence, metric: Metric | None = None, *, unit: str = "training seeds",
          item: str = "test items", resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """The mean over units of ``metric(a) / metric(b)`` with a percentile interval, or why it is not estimated.

    Not estimated (``{"estimable": False, "reason"}``) when the interval of ``metric(b)`` includes 0 or a unit's
    denominator is 0: a quotient by a denominator that may be zero has no interval worth printing.
    """
    joined, top, bottom = _joined(a, b, metric)
    kw = dict(unit=unit, item=item, resamples=resamples, seed=seed)
    denominator = estimate(joined, bottom, bounds=(-np.inf, np.inf), **kw)
    lo, hi = denominator["ci95"]
    if lo <= 0 <= hi or 0 in denominator["values"]:
        return {"estimable": False, "reason": f"the denominator's 95% interval [{lo:.4g}, {hi:.4g}] includes 0"}
    with np.errstate(divide="ignore", invalid="ignore"):
        out = estimate(joined, lambda m: top(m) / bottom(m), bounds=(-np.inf, np.inf), **kw)
    if not np.isfinite(out["ci95"]).all():
        return {"estimable": False, "reason": "no finite interval: a resample's denominator is 0, or the "
                                                    "sample has no variation"}
    return out


def versus_chance(outcomes: Sequence, chance: float) -> dict:
    """Exact one-sided binomial test of accuracy > ``chance`` per unit, combined over units (Stouffer)."""
    per_unit = []
    for g in _as_groups(outcomes):
        per_unit.append(float(_st.binomtest(int(g.sum()), len(g), chance, alternative="greater").pvalue))
    if len(per_unit) == 1:
        p = per_unit[0]
    else:
        clipped = np.clip(per_unit, 1e-300, 1 - 1e-16)  # Stouffer's z is infinite at exactly 0 or 1
        p = float(_st.combine_pvalues(clipped, method="stouffer").pvalue)
    return {"chance": chance, "p_value": p, "p_values": per_unit,
            "test": "exact one-sided binomial test of accuracy > chance over the test items of each unit; "
                    + ("one unit" if len(per_unit) == 1 else f"{len(per_unit)} units combined by Stouffer's method")}


def summarize(values: Sequence[float], *, bounds: tuple[float, float], unit: str = "seeds") -> dict:
    """An estimate from per-unit values alone (no items to resample): Student-t over units, cut to ``bounds``.

    Cutting an interval to the parameter's range never lowers its coverage. With one value, or no variation,
    the interval is ``bounds`` (said in ``method``).
    """
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("summarize needs at least one value")
    n, mean = len(vals), float(np.mean(vals))
    sd = float(np.std(vals, ddof=1)) if n > 1 else 0.0
    if sd > 0:
        half = float(_st.t.ppf(0.975, n - 1)) * sd / np.sqrt(n)
        ci = [max(bounds[0], mean - half), min(bounds[1], mean + half)]
        method = f"Student-t over {n} {unit}, cut to [{bounds[0]:g}, {bounds[1]:g}]; covers {unit}"
    else:
        ci = list(bounds)
        method = f"the metric's whole range: {n} {unit} without variation, no interval can be estimated"
    return {"mean": mean, "ci95": ci, "n": n, "values": vals,
            "range": [float(b) if np.isfinite(b) else None for b in bounds], "method": method}
