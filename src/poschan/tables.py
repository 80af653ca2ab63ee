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
