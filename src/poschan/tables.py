"""CSV tables of result rows."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from poschan.results import atomic_write_text
from poschan.stats import p_text


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` (dicts; the union of their keys are the columns) atomically as CSV."""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def flat_stats(row: dict) -> dict:
    """A metrics row as one CSV line: each statistic ``{"mean", "ci95", "n", ...}`` under key ``k`` becomes the
    columns ``k`` (mean), ``k_lo``, ``k_hi``, ``k_n`` (and ``k_p`` for its p-value); a test ``{"p_value", ...}``
    becomes ``k_p``; other values are kept as they are."""
    flat: dict = {}
    for key, value in row.items():
        if isinstance(value, dict) and {"mean", "ci95", "n"} <= set(value):
            lo, hi = value["ci95"] or (None, None)  # None: no interval (said in the statistic's method)
            flat |= {key: value["mean"], f"{key}_lo": lo, f"{key}_hi": hi, f"{key}_n": value["n"]}
            if "p_value" in value:
                flat[f"{key}_p"] = value["p_value"]
                if value.get("p_bound"):
                    flat[f"{key}_p_bound"] = True
        elif isinstance(value, dict) and "p_value" in value:
            flat[f"{key}_p"] = value["p_value"]
        else:
            flat[key] = value
    return flat


def comparison_rows(comparisons: list[dict]) -> list[dict]:
    """Paired comparisons (statistics with a name, two sides and a p-value) as CSV lines; ``p_bound`` says
    where the p-value is only a bound (a resampling floor)."""
    return [{"name": c["name"], "a": c["a"], "b": c["b"], "difference": c["mean"], "lo": c["ci95"][0],
             "hi": c["ci95"][1], "n": c["n"], "p_value": c["p_value"], "p_bound": bool(c.get("p_bound"))}
            for c in comparisons]


def comparison_line(c: dict) -> str:
    """One paired comparison as a line of a command's printed summary."""
    return f"{c['name']:<44} {c['mean']:+.3f} [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]  {p_text(c)}"
