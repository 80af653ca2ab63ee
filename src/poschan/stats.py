"""Estimates with 95% intervals that stay inside their metric's range, and paired comparisons with p-values.

Every estimate is ``{"mean", "ci95", "n", "values", "range", "method"}``: ``values`` are the per-unit estimates
(one per training seed, ranking seed or random draw), ``mean`` their mean, ``range`` the metric's range (null for
an unbounded side) and ``method`` names how the interval was computed and which sources of variation it covers.
Data come as *groups*: one array per unit, holding one row per test item (an image, a canvas, a channel). A metric
is a function of the mean of its group's rows (accuracy: the mean of 0/1 rows; mIoU: a function of the mean
per-image confusion matrix).

- several units: every unit is scored on the same items (a crossed design), so the mean over units varies with
  the units (σ²_unit/U), with the items all units share (σ²_item/I) and with their interaction. Each unit's items
  become jackknife pseudo-values of its metric; a two-way analysis of variance of the U × I pseudo-values gives
  V_units = s²/U and V_items = max(0, MS_items − MS_residual)/(U·I) (method of moments, Searle, Casella &
  McCulloch 1992); the half-width √(t²(U−1)·V_units + t²(I−1)·V_items) is built on the logit of the metric's
  range (log for a one-sided range) and mapped back. Units with different numbers of items (not crossed): Student-t over
  the unit estimates, whose spread then holds the item noise too.
- one unit: ``scipy.stats.bootstrap`` over items (BCa), or Wilson's score interval for a proportion;
- a sample without any variation: Wilson over one unit's items for a proportion (a paired difference of 0/1
  outcomes: the discordant shares), else the rule of three (fewer than 3/I of the items could differ), said so in
  ``method``; never the metric's whole range.

Paired differences carry the p-value of the same test that gives the interval (below 0.05 exactly when the
interval excludes 0); a resampling p-value at its floor 2/(B+1) is a bound (``p_bound``), printed "p ≤ ... (floor)".
The calibration of these intervals under the crossed design is a test of the suite (tests/test_stats_calibration).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as _st

Metric = Callable[[np.ndarray], np.ndarray]  # item means (..., d) -> metric (...)
# Which inference a run's statistics come from, recorded in its results.json ("stats"): 2 is the crossed design's
# Student-t above; runs without it carry the two-level percentile bootstrap, whose intervals under-cover.
METHOD_VERSION = 2
RESAMPLES = 4000
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


@dataclass(frozen=True)
class _Scale:
    """The scale a Student-t interval is built on, so that mapped back it stays inside ``bounds``."""

    bounds: tuple[float, float]

    def forward(self, x: float) -> float:
        lo, hi = self.bounds
        with np.errstate(divide="ignore", invalid="ignore"):
            if np.isfinite(lo) and np.isfinite(hi):
                return float(np.log(x - lo) - np.log(hi - x))
            if np.isfinite(lo):
                return float(np.log(x - lo))
            if np.isfinite(hi):
                return float(-np.log(hi - x))
        return float(x)

    def back(self, y: float) -> float:
        lo, hi = self.bounds
        if np.isfinite(lo) and np.isfinite(hi):
            return float(lo + (hi - lo) * _st.logistic.cdf(y))
        if np.isfinite(lo):
            return float(lo + np.exp(y))
        if np.isfinite(hi):
            return float(hi - np.exp(-y))
        return float(y)

    def slope(self, x: float) -> float:
        lo, hi = self.bounds
        with np.errstate(divide="ignore"):
            if np.isfinite(lo) and np.isfinite(hi):
                return float((hi - lo) / ((x - lo) * (hi - x)))
            if np.isfinite(lo):
                return float(1 / (x - lo))
            if np.isfinite(hi):
                return float(1 / (hi - x))
        return 1.0

    @property
    def name(self) -> str:
        lo, hi = self.bounds
        if np.isfinite(lo) and np.isfinite(hi):
            return f"on the logit of [{lo:g}, {hi:g}]"
        return "on the log of the distance to the bound" if np.isfinite(lo) or np.isfinite(hi) else "on the raw scale"


@dataclass(frozen=True)
class _T:
    """A Student-t statistic: ``centre`` and standard error ``se`` on ``scale``, ``df`` degrees of freedom."""

    centre: float
    se: float
    df: float
    scale: _Scale

    def interval(self) -> list[float]:
        half = float(_st.t.ppf(0.975, self.df)) * self.se
        return [self.scale.back(self.centre - half), self.scale.back(self.centre + half)]

    def p_value(self, null: float, alternative: str = "two-sided") -> float:
        t = (self.centre - self.scale.forward(null)) / self.se
        if alternative == "greater":
            return float(_st.t.sf(t, self.df))
        return float(min(1.0, 2 * _st.t.sf(abs(t), self.df)))


def _t_around(mean: float, se: float, df: float, bounds: tuple[float, float]) -> _T:
    """The Student-t statistic of ``mean`` (raw standard error ``se``) on the scale of ``bounds`` (the delta
    method); on the raw scale, to be cut to the range, where the mean sits on a bound."""
    scale = _Scale(bounds)
    if not np.isfinite(scale.forward(mean)):
        scale = _Scale((-np.inf, np.inf))
    return _T(scale.forward(mean), scale.slope(mean) * se, df, scale)


def _matching_df(quantile: float) -> float:
    """The degrees of freedom whose Student-t 97.5% quantile is ``quantile`` (inf at or below the normal's)."""
    if quantile <= _st.norm.ppf(0.975):
        return np.inf
    return float(optimize.brentq(lambda df: _st.t.ppf(0.975, df) - quantile, 0.2, 1e7))


def _pseudo_values(rows: np.ndarray, fn: Metric) -> np.ndarray:
    """Jackknife pseudo-values of ``fn(item mean)`` over the items of one unit: n·θ − (n−1)·θ₋ᵢ (for a mean metric
    they are the items themselves). Written here: scipy's jackknife gives the resulting variance, not the values."""
    n = len(rows)
    total = rows.sum(axis=0)
    with np.errstate(all="ignore"):
        leave_one_out = fn((total[None, :] - rows) / (n - 1))
        return n * fn(total / n) - (n - 1) * leave_one_out


def _crossed_variance(gs: list[np.ndarray], fn: Metric, values: np.ndarray) -> tuple[float, float] | None:
    """The two parts of the variance of the mean of ``values`` over crossed units × shared items: the units' (their
    spread, holding their interaction with the items) and the shared items' (method of moments, 0 where the
    items add nothing beyond the interaction); None where the pseudo-values are not finite."""
    units, items = len(gs), len(gs[0])
    z = np.stack([_pseudo_values(g, fn) for g in gs])
    if not np.isfinite(z).all():
        return None
    z = z - z.mean(axis=1, keepdims=True) + values[:, None]  # each unit's pseudo-values centred on its estimate
    columns = z.mean(axis=0)
    ms_items = units * float(((columns - values.mean()) ** 2).sum()) / (items - 1)
    residual = z - values[:, None] - columns[None, :] + values.mean()
    ms_residual = float((residual ** 2).sum()) / ((units - 1) * (items - 1))
    return float(np.var(values, ddof=1)) / units, max(0.0, ms_items - ms_residual) / (units * items)


def _unit_t(gs: list[np.ndarray], fn: Metric, values: np.ndarray, bounds: tuple[float, float], unit: str,
            item: str) -> tuple[_T | None, str]:
    """The Student-t statistic of the mean over several units (None without variation) and its method text.

    Crossed: half-width √(t²(U−1)·V_units + t²(I−1)·V_items), each part with its own degrees of freedom (as in
    Graybill & Wang's modified large-sample intervals); Satterthwaite's df with estimated weights is too liberal
    with 3 units (it grows exactly when the units' spread comes out small). The test's df match that quantile.
    """
    units, items, mean = len(values), len(gs[0]), float(values.mean())
    crossed = len({len(g) for g in gs}) == 1 and items > 1
    parts = _crossed_variance(gs, fn, values) if crossed else None
    v_units, v_items = parts if parts is not None else (float(np.var(values, ddof=1)) / units, 0.0)
    var = v_units + v_items
    if var <= 0:
        return None, f"Student-t over {units} {unit}"
    t_units, t_items = _st.t.ppf(0.975, units - 1), _st.t.ppf(0.975, items - 1)
    df = _matching_df(float(np.sqrt((t_units ** 2 * v_units + t_items ** 2 * v_items) / var)))
    if parts is None:
        how = f"Student-t over {units} {unit} ({item} not shared by every unit: their noise is in the spread)"
    else:
        how = (f"Student-t over {units} {unit} × {items} shared {item} (crossed): the units' variance and the shared "
               f"items' (method of moments on jackknife pseudo-values), each with its own df (effective df {df:.1f})")
    t = _t_around(mean, float(np.sqrt(var)), df, bounds)
    return t, f"{how}, {t.scale.name}; covers {unit} and {item}"


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


def _sign_p(dist: np.ndarray, null: float) -> tuple[float, bool]:
    """Two-sided bootstrap p-value of H0 "estimate = null" (the smaller tail share beyond ``null``, doubled) and
    whether it is only a bound: no resample beyond ``null``, so p is at its floor 2/(B+1)."""
    b = len(dist)
    tail = min(int(np.sum(dist <= null)), int(np.sum(dist >= null)))
    return min(1.0, 2 * (tail + 1) / (b + 1)), tail == 0


def _is_binary(groups: list[np.ndarray]) -> bool:
    return all(np.isin(g, (0.0, 1.0)).all() for g in groups)


def _wilson(successes: int, trials: int) -> tuple[float, float]:
    ci = _st.binomtest(successes, trials).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass
class _Inference:
    """An estimate and what tests it: a Student-t statistic, a one-unit bootstrap distribution, or neither."""

    out: dict
    t: _T | None = None
    dist: np.ndarray | None = None


def _estimate(gs: list[np.ndarray], fn: Metric, bounds: tuple[float, float], unit: str, item: str,
              resamples: int, seed: int, kind: str) -> _Inference:
    """The estimate and what tests it. ``kind`` is "proportion" (0/1 rows, the mean), "paired" (two 0/1 columns,
    their difference) or "other"."""
    values = np.array([float(fn(g.mean(axis=0))) for g in gs])
    mean = float(values.mean())
    out: dict = {"mean": mean, "ci95": None, "n": len(values), "values": values.tolist(),
                 "range": [float(b) if np.isfinite(b) else None for b in bounds]}
    found = _Inference(out)
    if len(gs) == 1 and kind == "proportion":
        out["ci95"] = list(_wilson(int(gs[0].sum()), len(gs[0])))
        out["method"] = (f"Wilson score interval over {len(gs[0])} {item} (one of the {unit}: their variation "
                         "not covered)")
    elif len(gs) == 1:
        dist, ci = _one_level(gs[0], fn, resamples, np.random.default_rng(seed))
        if ci is not None and ci[1] > ci[0]:
            out["ci95"], found.dist = list(ci), dist
            out["method"] = (f"BCa bootstrap over {len(gs[0])} {item} ({resamples} resamples; one of the {unit}: "
                             "their variation not covered)")
    else:
        found.t, out["method"] = _unit_t(gs, fn, values, bounds, unit, item)
        if found.t is not None:
            out["ci95"] = found.t.interval()
    if out["ci95"] is None or out["ci95"][1] - out["ci95"][0] <= 0:
        found.t = found.dist = None
        out["ci95"], out["method"] = _without_variation(gs, mean, bounds, unit, item, kind)
    lo, hi = bounds  # the contract: inside the range, around the mean
    out["ci95"] = [max(lo, min(out["ci95"][0], mean)), min(hi, max(out["ci95"][1], mean))]
    return found


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
    return _estimate(gs, metric or _mean_column, bounds, unit, item, resamples, seed, _kind(gs, metric)).out


def _without_variation(gs: list[np.ndarray], mean: float, bounds: tuple[float, float], unit: str, item: str,
                       kind: str) -> tuple[list[float], str]:
    """The interval the design supports when every unit and item agree: one unit's ``items`` bound how often an
    item could disagree (the units may be alike, so their items are not pooled)."""
    units, items = len(gs), max(len(g) for g in gs)
    agree = f"every one of the {units} {unit} × {items} {item} agree"
    if kind == "proportion":
        k = round(mean * items)
        return list(_wilson(k, items)), f"Wilson score interval of {k} of {items} {item}: {agree}"
    if kind == "paired":
        up, down = (round(c / units) for c in _discordant(gs))
        (up_lo, up_hi), (down_lo, down_hi) = _wilson(up, items), _wilson(down, items)
        return [up_lo - down_hi, up_hi - down_lo], (
            f"difference of Wilson intervals of the two discordant shares ({up} and {down} of {items} {item}): "
            f"{agree}")
    lo, hi = bounds
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return [-np.inf, np.inf], f"not estimable: {agree}, and the metric has no range to bound a change by"
    share = min(1.0, 3 / items)
    return [mean - share * (hi - lo), mean + share * (hi - lo)], (
        f"rule of three: {agree}, so fewer than 3/{items} of the {item} would differ (95%); a metric of item means "
        "moves by at most that share of its range")


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
    (e.g. (-1, 1) for accuracies). The p-value is the same test's as the interval's (below 0.05 exactly when the
    interval excludes 0); without any variation, 0/1 outcomes get McNemar's exact test over the discordant items.
    """
    joined, left, right = _joined(a, b, metric)
    kind = "paired" if metric is None and joined[0].shape[1] == 2 and _is_binary(joined) else "other"
    found = _estimate(joined, lambda m: left(m) - right(m), bounds, unit, item, resamples, seed, kind)
    out = found.out
    if found.t is not None:
        out["p_value"] = found.t.p_value(0.0)
        out["test"] = f"two-sided Student-t test of a zero difference (df {found.t.df:.1f})"
    elif found.dist is not None:
        out["p_value"], bound = _sign_p(found.dist, 0.0)
        out["test"] = "two-sided bootstrap test of a zero difference"
        if bound:
            out["p_bound"] = True
    elif kind == "paired":
        up, down = (round(c / len(joined)) for c in _discordant(joined))
        out["p_value"] = float(_st.binomtest(up, up + down).pvalue) if up + down else 1.0
        out["test"] = "McNemar's exact test over the discordant items of one unit (every unit agrees)"
    else:
        out["p_value"], out["test"] = 1.0, "no variation to test against"
    return out


def p_text(s: dict, *, cell: bool = False) -> str:
    """A statistic's p-value as printed, to 2 significant figures: "p = 0.012", "p = 3.1e-05", "p < 1e-16" (0
    included), or "p ≤ 0.0005 (floor)" where it is a resampling bound (flagged, or a bootstrap p at the floor
    2/(B+1) of the default B, as older runs recorded it unflagged). With ``cell`` (a table's p column) without the
    "p": "0.012", "< 1e-16", "≤ 0.0005 (floor)"."""
    p = s["p_value"]
    if s.get("p_bound") or ("bootstrap" in s.get("test", s.get("method", "")) and p <= 2 / (RESAMPLES + 1)):
        text = f"≤ {p:.2g} (floor)"
    elif p < 1e-16:
        text = "< 1e-16"
    else:
        return f"{p:#.2g}" if cell else f"p = {p:#.2g}"
    return text if cell else f"p {text}"


def ratio(a: Sequence, b: Sequence, metric: Metric | None = None, *, unit: str = "training seeds",
          item: str = "test items", resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """The mean over units of ``metric(a) / metric(b)`` with its interval, or why it is not estimated.

    Not estimated (``{"estimable": False, "reason"}``) when the interval of ``metric(b)`` includes 0 or a unit's
    denominator is 0: a quotient by a denominator that may be zero has no interval worth printing. A denominator
    whose rows are all alike (every unit right on every item, say) is known exactly: only its value must not be 0.
    """
    joined, top, bottom = _joined(a, b, metric)
    kw = dict(unit=unit, item=item, resamples=resamples, seed=seed)
    rows_b = _as_groups(b)
    if all((g == rows_b[0][0]).all() for g in rows_b):
        if abs(float(bottom(joined[0].mean(axis=0)))) < 1e-12:
            return {"estimable": False, "reason": "the denominator is 0 on every unit and item"}
    else:
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
    """One-sided test of accuracy > ``chance``: the exact binomial test over the items of one unit, or over several
    units the Student-t test of the crossed design (the same as the interval's of ``proportion``)."""
    gs = _as_groups(outcomes)
    if len(gs) == 1:
        p = float(_st.binomtest(int(gs[0].sum()), len(gs[0]), chance, alternative="greater").pvalue)
        return {"chance": chance, "p_value": p, "test": "exact one-sided binomial test of accuracy > chance over "
                                                        f"the {len(gs[0])} test items of one unit"}
    found = _estimate(gs, _mean_column, (0.0, 1.0), "units", "test items", RESAMPLES, 0, _kind(gs, None))
    if found.t is not None:
        p, test = found.t.p_value(chance, "greater"), f"one-sided Student-t test of accuracy > chance ({len(gs)} units" \
                                                      f" × shared test items, df {found.t.df:.1f})"
    else:  # every unit and item agree: the exact test over one unit's items
        p = float(_st.binomtest(round(found.out["mean"] * len(gs[0])), len(gs[0]), chance,
                                alternative="greater").pvalue)
        test = "exact one-sided binomial test over one unit's items (every unit and item agree)"
    return {"chance": chance, "p_value": p, "test": test}


def summarize(values: Sequence[float], *, bounds: tuple[float, float], unit: str = "seeds") -> dict:
    """An estimate from per-unit values alone (no items to resample): Student-t over units on the logit of the
    range (as ``estimate``). With one value, or no variation, there is no interval: ``ci95`` is None (said in
    ``method``)."""
    vals = np.array([float(v) for v in values])
    if not len(vals):
        raise ValueError("summarize needs at least one value")
    n, mean = len(vals), float(vals.mean())
    out = {"mean": mean, "ci95": None, "n": n, "values": vals.tolist(),
           "range": [float(b) if np.isfinite(b) else None for b in bounds]}
    sd = float(np.std(vals, ddof=1)) if n > 1 else 0.0
    if sd > 0:
        t = _t_around(mean, sd / np.sqrt(n), n - 1.0, bounds)
        lo, hi = t.interval()
        out["ci95"] = [max(bounds[0], min(lo, mean)), min(bounds[1], max(hi, mean))]
        out["method"] = f"Student-t over {n} {unit}, {t.scale.name}; covers {unit}"
    else:
        out["method"] = f"no interval: {n} {unit}" + (" without variation" if n > 1 else " only")
    return out


# -- learning curves: has a curve stopped changing? ------------------------------------------------------------------

FLAT_SLOPE = 0.005  # accuracy per epoch: a curve whose slope interval lies inside ±this is flat (0.05 over 10 epochs)


def trend(slope: dict) -> str:
    """A learning curve's end, from the interval of its slope over seeds: "flat within ±X per epoch" (inside
    ±``FLAT_SLOPE``), "rising" or "falling" (excluding 0), else "undetermined" (no interval, or one too wide)."""
    if slope["ci95"] is None:
        return "undetermined"
    lo, hi = slope["ci95"]
    if -FLAT_SLOPE < lo and hi < FLAT_SLOPE:
        return f"flat within ±{FLAT_SLOPE} per epoch"
    if lo > 0:
        return "rising"
    if hi < 0:
        return "falling"
    return "undetermined"


def plateaus(curves: list[dict]) -> list[dict]:
    """Per curve (rows ``{"variant", "eval", "seed", "epoch", "accuracy"}``) trained 3 epochs or more: the last
    epoch's accuracy over seeds, and the slope of the curve over its last third (epochs ``since_epoch``..last, at
    least 3 points): a least-squares slope per seed, Student-t over seeds (``summarize``), and its ``trend``."""
    series: dict[tuple[str, str], dict[int, dict[int, float]]] = {}
    for c in curves:
        series.setdefault((c["variant"], c["eval"]), {}).setdefault(c["seed"], {})[c["epoch"]] = c["accuracy"]
    out = []
    for (variant, name), seeds in series.items():
        last = min(max(s) for s in seeds.values())
        if last < 3:
            continue
        since = last - max(2, last // 3)
        span = np.arange(since, last + 1)
        slopes = [float(np.polyfit(span, [s[e] for e in span], 1)[0]) for s in seeds.values()]
        slope = summarize(slopes, bounds=(-1.0, 1.0))
        out.append({"variant": variant, "eval": name, "epochs": last, "since_epoch": since,
                    "final": summarize([s[last] for s in seeds.values()], bounds=(0.0, 1.0)), "slope": slope,
                    "trend": trend(slope)})
    return out


# -- two edits of the same items compared, unit by unit ---------------------------------------------------------------

def beside(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two sets of rows of the same items side by side: rows for ``halves_difference_of``."""
    return np.concatenate([a, b], axis=1)


def halves_difference_of(metric: Metric) -> Metric:
    """``metric`` of the first half of ``beside`` rows minus ``metric`` of the second half."""
    def difference(means: np.ndarray) -> np.ndarray:
        half = means.shape[-1] // 2
        return metric(means[..., :half]) - metric(means[..., half:])
    return difference


def paired_units(a: list, b: list, a_unit: str, b_unit: str) -> tuple[list, list, str, str]:
    """Unit i of ``a`` beside unit i of ``b`` (independent units: any pairing estimates the variance of a
    difference), cycling the shorter side when the counts differ: (a's, b's, the pairs' unit name, what was done)."""
    m = max(len(a), len(b))
    unit = f"({a_unit[:-1]}, {b_unit[:-1]}) pairs"
    if len(a) == len(b):
        return a, b, unit, f"; {a_unit[:-1]} i paired with {b_unit[:-1]} i"
    fewer, count = (a_unit, len(a)) if len(a) < len(b) else (b_unit, len(b))
    shared = (f"the one {fewer[:-1]} is in every pair, so its variation is not covered" if count == 1 else
              f"each of the {count} {fewer} is in several pairs, so their variation is understated")
    return ([a[i % len(a)] for i in range(m)], [b[i % len(b)] for i in range(m)], unit,
            f"; {len(a)} {a_unit} and {len(b)} {b_unit} paired cyclically into {m} pairs (i mod {len(a)} with i mod "
            f"{len(b)}): {shared}")


def comparison(stat: dict, name: str, a: str, b: str, question: str) -> dict:
    """A comparison entry (``metrics["comparisons"]``): the paired difference ``stat`` with its labels."""
    return {"name": name, "a": a, "b": b, "question": question, **stat}


def negated(stat: dict) -> dict:
    """The statistic of −X from that of X (the cost of what a difference measures as a gain): the mean, values,
    interval and range negated; the p-value of a zero difference and the method hold unchanged (every interval here
    is symmetric under negation: a Student-t on the logit of a range centred at 0, or a bootstrap's quantiles)."""
    out = {**stat, "mean": -stat["mean"], "values": [-v for v in stat["values"]],
           "ci95": [-stat["ci95"][1], -stat["ci95"][0]]}
    return {**out, "range": [-stat["range"][1], -stat["range"][0]]} if "range" in stat else out
