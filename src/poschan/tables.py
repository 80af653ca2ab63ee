"""The one writer of result tables and summaries: CSV rows with flat statistic columns (``flat_stats``) and a
statistic as text (``format_stat``), used by every command and by the report."""

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


def write_tables(folder: Path, rows: list[dict], comparisons: list[dict]) -> None:
    """A study's two tables: ``folder/table.csv`` (``rows`` with flat statistic columns) and
    ``folder/comparisons.csv`` (its paired comparisons)."""
    write_csv(folder / "table.csv", [flat_stats(row) for row in rows])
    write_csv(folder / "comparisons.csv", comparison_rows(comparisons))


def comparison_rows(comparisons: list[dict]) -> list[dict]:
    """Paired comparisons (statistics with a name, two sides and a p-value) as CSV lines; ``p_bound`` says
    where the p-value is only a bound (a resampling floor)."""
    return [{"name": c["name"], "a": c["a"], "b": c["b"], "difference": c["mean"],
             "lo": (c["ci95"] or (None, None))[0], "hi": (c["ci95"] or (None, None))[1], "n": c["n"],
             "p_value": c["p_value"], "p_bound": bool(c.get("p_bound"))} for c in comparisons]


def format_stat(stat: dict, digits: int = 3, *, signed: bool = False, p: bool = False) -> str:
    """A statistic ``{"mean", "ci95", ...}`` as text: ``0.310 [0.280, 0.340]`` (with ``signed`` a sign on each
    number; with ``p`` its p-value, a resampling floor printed as a bound), or ``0.310 (no interval)``."""
    spec = f"{'+' if signed else ''}.{digits}f"
    text = f"{stat['mean']:{spec}}"
    text += f" [{stat['ci95'][0]:{spec}}, {stat['ci95'][1]:{spec}}]" if stat.get("ci95") else " (no interval)"
    return f"{text}  {p_text(stat)}" if p and "p_value" in stat else text


def comparison_line(c: dict) -> str:
    """One paired comparison as a line of a command's printed summary."""
    return f"{c['name']:<44} {format_stat(c, signed=True, p=True)}"


def print_comparisons(comparisons: list[dict]) -> None:
    """Each paired comparison as a line (``comparison_line``)."""
    for c in comparisons:
        print(comparison_line(c))
