"""CSV tables of result rows."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from poschan.results import atomic_write_text


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
    columns ``k`` (mean), ``k_lo``, ``k_hi`` and ``k_n``; other values are kept as they are."""
    flat: dict = {}
    for key, value in row.items():
        if isinstance(value, dict) and {"mean", "ci95", "n"} <= set(value):
            flat |= {key: value["mean"], f"{key}_lo": value["ci95"][0], f"{key}_hi": value["ci95"][1],
                     f"{key}_n": value["n"]}
        else:
            flat[key] = value
    return flat
