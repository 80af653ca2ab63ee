"""The results contract as the tests check it: every statistic self-consistent, inside its range, of non-zero
width, with a method; every comparison with a p-value."""

from __future__ import annotations

import math


def statistic_ok(stat: dict, low: float | None = None, high: float | None = None, method_has: str = "") -> bool:
    """n values, their mean, an interval of non-zero width around it inside [low, high] (default: the range the
    statistic records), and a method (containing ``method_has``); or no interval, said so, where the values alone
    (one, or all equal) support none."""
    rng = stat.get("range") or [None, None]
    low = rng[0] if low is None else low
    high = rng[1] if high is None else high
    if stat["ci95"] is None:  # summaries of per-unit values alone: one value, or no variation, has no interval
        return (stat["n"] == len(stat["values"]) >= 1 and "no interval" in stat.get("method", "")
                and (stat["n"] == 1 or len(set(stat["values"])) == 1))
    lo, hi = stat["ci95"]
    return (stat["n"] == len(stat["values"]) >= 1
            and math.isclose(stat["mean"], sum(stat["values"]) / stat["n"], rel_tol=1e-9, abs_tol=1e-12)
            and (low is None or low <= lo) and lo <= stat["mean"] <= hi and (high is None or hi <= high) and lo < hi
            and method_has in stat.get("method", "") and bool(stat.get("method")))


def violations(node: object, path: str = "metrics") -> list[str]:
    """Every statistic under ``node`` that breaks the contract (a statistic must also record its range)."""
    if isinstance(node, dict):
        if "mean" in node and "values" in node:
            bad = [] if "range" in node and statistic_ok(node) else [f"{path}: {node.get('ci95')} {node.get('range')}"]
            if "p_value" in node and not 0 < node["p_value"] <= 1:
                bad.append(f"{path}: p-value {node['p_value']}")
            return bad
        return [v for key, value in node.items() for v in violations(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [v for i, value in enumerate(node) for v in violations(value, f"{path}[{i}]")]
    return []
