"""How a report prints numbers (one rule: 3 significant figures, p-values as p-values) and names columns."""

import re

import pytest

from poschan.report.document import header, interval, number, section
from poschan.results import RunDir
from poschan.tables import comparison_rows, flat_stats, write_csv


@pytest.mark.parametrize("value, text", [
    (0.8304, "0.830"), (1.0, "1.00"), (-0.041, "-0.0410"), (0.000123, "0.000123"), (1.234e-5, "1.23e-05"),
    (123.4, "123"), (99.96, "100"), (12345.0, "12,345"), (12345, "12345"), (3, "3"), (True, "True"), ("zeros", "zeros"),
])
def test_numbers_print_to_three_significant_figures_and_counts_as_they_are(value, text):
    assert number(value) == text


def test_an_interval_is_its_mean_then_its_bracket():
    assert interval(0.31, 0.28, 0.34) == "0.310 [0.280, 0.340]"


@pytest.mark.parametrize("column, words", [
    ("p_value", "p-value"), ("selectivity_p", "selectivity p-value"), ("mean_drop", "mean drop"),
    ("retained_above_chance", "retained above chance"), ("ci95", "95% CI"), ("miou_in", "mIoU in"), ("n", "n"),
])
def test_column_names_print_in_words(column, words):
    assert header(column) == words


def test_p_columns_print_as_p_values_never_as_zero_bounds_as_bounds_and_missing_as_empty(tmp_path):
    run = RunDir(tmp_path / "run", {})
    work = run.open()
    stat = {"mean": 0.5, "ci95": [0.4, 0.6], "n": 3}
    write_csv(work / "table.csv", [flat_stats({"row": "r", "gain": {**stat, "p_value": 0.0}, "cost": {**stat,
                                   "p_value": 2 / 4001, "p_bound": True}, "max_p": 0.01234}), {"row": "s"}])
    write_csv(work / "comparisons.csv", comparison_rows([{"name": "x", "a": "a", "b": "b", **stat, "p_value": 0.0},
                                                         {"name": "y", "a": "a", "b": "b", **stat, "p_value": 3.1e-5}]))
    run.write_results("rank", {}, [0], "cpu", 1.0)
    tables = {t.name: t for t in section(run.commit()).tables}
    table, comparisons = tables["table"], tables["comparisons"]
    assert table.columns == ["row", "gain [95% CI]", "gain n", "gain p-value", "cost [95% CI]", "cost n",
                             "cost p-value", "max p-value"]
    assert table.rows == [["r", "0.500 [0.400, 0.600]", "3", "< 1e-16", "0.500 [0.400, 0.600]", "3",
                           "≤ 0.0005 (floor)", "0.012"], ["s"] + [""] * 7]  # a row without them: empty cells
    assert comparisons.columns == ["name", "a", "b", "difference [95% CI]", "n", "p-value"]
    assert [row[-1] for row in comparisons.rows] == ["< 1e-16", "3.1e-05"]
    assert not any(re.fullmatch(r"[0.]+", cell) for t in (table, comparisons) for row in t.rows for cell in row)
