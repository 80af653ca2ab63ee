"""What a report shows of each run, independent of the output format: the command, date, environment and
resolved config; every statistic of its metrics outside lists (mean, interval, n, method); its CSV tables, each
statistic's mean and interval columns (``k``, ``k_lo``, ``k_hi``, see ``tables.flat_stats``) joined in one cell,
p-values as p-values (``stats.p_text``), column names in words (per-epoch tables are left to their figures); and its
figures. ``number``, ``interval`` and ``stats.p_text`` are the one rule by which the report prints numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from poschan.results import Run, load_run
from poschan.stats import p_text

MAX_ROWS = 60  # a longer table (one row per channel, say) is cut; its CSV beside the run has every row
WORDS = {"p": "p-value", "ci95": "95% CI", "miou": "mIoU", "iou": "IoU", "spc": "SPC", "mae": "MAE", "vs": "versus"}


@dataclass(frozen=True)
class Table:
    name: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    total: int | None = None  # the rows before a cut (None: none cut)


@dataclass(frozen=True)
class Section:
    """One run in a report."""

    run: Run
    summary: Table
    tables: list[Table]
    figures: list[Path]

    @property
    def title(self) -> str:
        return f"{self.run.experiment} · {self.run.path.name}"


def number(value: object) -> str:
    """A number as a report prints it: a float to 3 significant figures, trailing zeros kept (0.830, 1.00, -0.0410,
    1.23e-05), from 1,000 on whole with thousands separators (12,345); an int (a count) and any other value as is."""
    if not isinstance(value, float) or not math.isfinite(value):
        return str(value)
    if abs(value) >= 999.5:
        return f"{value:,.0f}"
    return f"{value:#.3g}".removesuffix(".")


def interval(mean: object, lo: object, hi: object) -> str:
    """A mean and its interval: "0.310 [0.280, 0.340]"."""
    return f"{number(mean)} [{number(lo)}, {number(hi)}]"


def header(column: str) -> str:
    """A CSV column's name in words: underscores as spaces, a few abbreviations spelled out (``p_value`` and a
    ``*_p`` column: p-value; ``ci95``: 95% CI; ``miou``: mIoU)."""
    return " ".join(WORDS.get(word, word) for word in (["p"] if column == "p_value" else column.split("_")))


def _is_statistic(node: object) -> bool:
    return isinstance(node, dict) and {"mean", "ci95", "n"} <= set(node)


def _statistics(node: object, path: str = "") -> list[tuple[str, dict]]:
    """(path, statistic) of every statistic in ``node`` reached through dicts only (lists are the CSV tables)."""
    if _is_statistic(node):
        return [(path, node)]
    if isinstance(node, dict):
        return [found for key, value in node.items()
                for found in _statistics(value, f"{path}.{key}" if path else str(key))]
    return []


def summary(run: Run) -> Table:
    rows = [[path, interval(s["mean"], *s["ci95"]) if s["ci95"] else f"{number(s['mean'])} (no interval)",
             str(s["n"]),
             str(s.get("method", "not recorded"))] for path, s in _statistics(run.metrics)]
    return Table("summary", ["metric", "mean [95% CI]", "n", "interval method"], rows)


def _table(run: Run, name: str) -> Table:
    rows = run.table(name)
    columns = list(rows[0]) if rows else []
    joined = {c: pair for c in columns if (pair := _interval_columns(c, columns))}  # statistic -> its interval
    bounds = {c: _bound_column(c) for c in columns if _is_p(c)}  # p-value -> its "is a bound" column
    hidden = {k for pair in joined.values() for k in pair} | set(bounds.values())
    shown = [c for c in columns if c not in hidden]

    def cell(row: dict, column: str) -> str:
        value = _parse(row[column])
        if value in ("", None):  # not measured in this row
            return ""
        if column in joined:
            lo, hi = joined[column]
            if row[lo] in ("", None):  # no interval (said in the run's summary)
                return f"{number(value)} (no interval)"
            return interval(value, _parse(row[lo]), _parse(row[hi]))
        if column in bounds and isinstance(value, (int, float)):
            return p_text({"p_value": value, "p_bound": row.get(bounds[column]) == "True"}, cell=True)
        return number(value)

    header_row = [f"{header(c)} [95% CI]" if c in joined else header(c) for c in shown]
    return Table(name, header_row, [[cell(row, c) for c in shown] for row in rows[:MAX_ROWS]],
                 total=len(rows) if len(rows) > MAX_ROWS else None)


def _interval_columns(column: str, columns: list[str]) -> tuple[str, str] | None:
    """The columns of statistic ``column``'s interval: ``k_lo``, ``k_hi`` (``tables.flat_stats``), or ``lo``, ``hi``
    beside a comparison's ``difference`` (``tables.comparison_rows``); None where it has none."""
    pairs = [(f"{column}_lo", f"{column}_hi")] + ([("lo", "hi")] if column == "difference" else [])
    return next((pair for pair in pairs if set(pair) <= set(columns)), None)


def _is_p(column: str) -> bool:
    """Whether ``column`` holds p-values: ``p_value``, ``p`` or ``*_p`` (``tables.flat_stats``, ``comparison_rows``)."""
    return column in ("p_value", "p") or column.endswith("_p")


def _bound_column(column: str) -> str:
    """The column saying whether p-value ``column`` is only a bound (``tables.flat_stats``, ``comparison_rows``)."""
    return "p_bound" if column == "p_value" else f"{column}_bound"


def _parse(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            continue
    return text


def section(path: str | Path) -> Section:
    """The report section of the finished run in ``path`` (UserError when it is not one)."""
    run = load_run(path)
    # the main table first; per-epoch tables (learning curves) are shown by their figures, their CSVs stay
    names = sorted((n for n in run.tables if "epoch" not in (run.table(n)[:1] or [{}])[0]),
                   key=lambda name: name != "table")
    return Section(run, summary(run), [_table(run, name) for name in names], run.figures)
