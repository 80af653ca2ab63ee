"""What a report shows of each run, independent of the output format: the command, date, environment and
resolved config; every statistic of its metrics outside lists (mean, interval, n, method); its CSV tables, each
statistic's mean and interval columns (``k``, ``k_lo``, ``k_hi``, see ``tables.flat_stats``) joined in one cell
(per-epoch tables are left to their figures); and its figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from poschan.results import Run, load_run

MAX_ROWS = 60  # a longer table (one row per channel, say) is cut; its CSV beside the run has every row


@dataclass(frozen=True)
class Table:
    name: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


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
    """A number as the report prints it: 3 decimals, or 3 significant digits when smaller than 0.001."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}" if value == 0 or abs(value) >= 1e-3 else f"{value:.3g}"


def interval(mean: object, lo: object, hi: object) -> str:
    return f"{number(mean)} [{number(lo)}, {number(hi)}]"


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
    joined = {c for c in columns if f"{c}_lo" in columns and f"{c}_hi" in columns}
    bounds = {c: _bound_column(c) for c in columns if _bound_column(c) in columns}  # p-value -> its "is a bound"
    shown = [c for c in columns if not any(c in (f"{j}_lo", f"{j}_hi") for j in joined) and c not in bounds.values()]

    def cell(row: dict, column: str) -> str:
        if column in joined:
            if row[f"{column}_lo"] in ("", None):  # no interval (said in the run's summary)
                return f"{number(_parse(row[column]))} (no interval)"
            return interval(*(_parse(row[k]) for k in (column, f"{column}_lo", f"{column}_hi")))
        if column in bounds and row.get(bounds[column]) == "True":
            return f"≤ {number(_parse(row[column]))} (resampling floor)"
        return number(_parse(row[column]))

    header = [f"{c} [95% CI]" if c in joined else c for c in shown]
    note = f"the first {MAX_ROWS} of {len(rows)} rows; all in {name}.csv" if len(rows) > MAX_ROWS else ""
    return Table(name, header, [[cell(row, c) for c in shown] for row in rows[:MAX_ROWS]], note)


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
