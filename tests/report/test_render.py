"""`poschan report`: every statistic with its interval and method, the run's tables and figures, its command and
config; HTML that needs no network (figures embedded byte for byte), Markdown with working figure links."""

import base64
import re
from pathlib import Path

import matplotlib.pyplot as plt

from poschan.cli import main
from poschan.report.document import MAX_ROWS
from poschan.report.figures import save_figure
from poschan.report.render import MD_ROWS
from poschan.results import RunDir
from poschan.tables import flat_stats, write_csv

STAT = {"mean": 0.5, "ci95": [0.25, 0.75], "n": 3, "values": [0.25, 0.5, 0.75], "method": "student-t over seeds"}


def fake_run(root: Path) -> Path:
    run = RunDir(root / "run", {"lr": 0.001, "model": "resnet18-paper"})
    work = run.open()
    rows = [{"variant": "a", "accuracy": STAT}, {"variant": "b", "accuracy": {**STAT, "mean": 0.0004}}]
    write_csv(work / "table.csv", [flat_stats(r) for r in rows])
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    save_figure(fig, work / "curve.png")
    run.write_results("gap-study", {"overall": {"accuracy": STAT}, "rows": rows, "chance": 0.1}, [0, 1, 2], "cpu",
                      1.0, command="poschan gap-study --preset smoke --out run")
    return run.commit()


def test_html_report_embeds_every_figure_and_shows_every_interval(tmp_path, capsys):
    run = fake_run(tmp_path)
    out = tmp_path / "report.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    text = out.read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert [base64.b64decode(i) for i in images] == [(run / "curve.png").read_bytes()]
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched from a network
    assert "<td>overall.accuracy</td><td>0.500 [0.250, 0.750]</td><td>3</td><td>student-t over seeds</td>" in text
    assert "<th>accuracy [95% CI]</th>" in text and "<td>0.000400 [0.250, 0.750]</td>" in text
    assert "poschan gap-study --preset smoke --out run" in text and "model: resnet18-paper" in text
    assert f"report: {out}" in capsys.readouterr().out


def test_markdown_report_links_figures_relative_to_itself(tmp_path):
    run = fake_run(tmp_path)
    out = tmp_path / "docs" / "report.md"
    out.parent.mkdir()
    assert main(["report", str(run), "--out", str(out)]) == 0
    text = out.read_text()
    (link,) = re.findall(r"!\[curve.png\]\(([^)]+)\)", text)
    assert (out.parent / link).resolve() == (run / "curve.png").resolve()
    assert "| overall.accuracy | 0.500 [0.250, 0.750] | 3 | student-t over seeds |" in text
    assert "| a | 0.500 [0.250, 0.750] | 3 |" in text


def test_bad_report_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert not out.exists() and "not a finished poschan run" in capsys.readouterr().err
    out.write_text("mine")
    assert main(["report", str(fake_run(tmp_path)), "--out", str(out)]) == 2
    assert out.read_text() == "mine" and "already exists" in capsys.readouterr().err


def test_a_long_table_is_cut_and_says_where_the_rest_is(tmp_path):
    run = RunDir(tmp_path / "run", {})
    work = run.open()
    write_csv(work / "table.csv", [{"channel": i, "score": i / 100} for i in range(MAX_ROWS + 5)])
    run.write_results("rank", {}, [0], "cpu", 1.0)
    out = tmp_path / "r.md"
    assert main(["report", str(run.commit()), "--out", str(out)]) == 0
    text = out.read_text()  # Markdown: the first MD_ROWS, with a link to the whole CSV
    assert f"| {MD_ROWS - 1} |" in text and f"| {MD_ROWS} |" not in text
    assert f"*the first {MD_ROWS} of {MAX_ROWS + 5} rows; all in [table.csv](run/table.csv)*" in text
    page = tmp_path / "r.html"
    assert main(["report", str(tmp_path / "run"), "--out", str(page)]) == 0
    text = page.read_text()  # HTML: the first MAX_ROWS, folded
    assert f"<td>{MAX_ROWS - 1}</td>" in text and f"<td>{MAX_ROWS}</td>" not in text
    assert f"the first {MAX_ROWS} of {MAX_ROWS + 5} rows; all in table.csv" in text


def test_p_values_at_a_resampling_floor_print_as_bounds_and_missing_intervals_say_so(tmp_path):
    from poschan.stats import paired_difference, summarize
    from poschan.tables import comparison_rows

    run = RunDir(tmp_path / "run", {})
    work = run.open()
    floor = paired_difference([[1.0] * 150 + [0.0] * 50], [[0.0] * 150 + [1.0] * 50], metric=lambda m: m[..., 0] ** 2,
                              bounds=(-1, 1))  # one unit, a continuous metric: BCa, every resample above 0
    assert floor.get("p_bound") is True
    write_csv(work / "comparisons.csv", comparison_rows([{"name": "x", "a": "a", "b": "b", **floor}]))
    write_csv(work / "table.csv", [flat_stats({"row": "r", "share": summarize([0.2, 0.2], bounds=(0, 1))})])
    run.write_results("rank", {"same": summarize([0.2, 0.2], bounds=(0, 1))}, [0], "cpu", 1.0)
    out = tmp_path / "r.md"
    assert main(["report", str(run.commit()), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| difference [95% CI] | n | p-value |" in text and "] | 1 | ≤ 0.0005 (floor) |" in text
    assert "p_bound" not in text
    assert text.count("0.200 (no interval)") == 2


def test_each_experiment_opens_with_its_question_and_headline_figure_before_its_folded_runs(tmp_path):
    from poschan.report.render import QUESTIONS

    run = RunDir(tmp_path / "run", {})
    work = run.open()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, work / "scores.png")
    run.write_results("rank", {}, [0], "cpu", 1.0)
    out = tmp_path / "r.html"
    assert main(["report", str(run.commit()), "--out", str(out)]) == 0
    text = out.read_text()
    question, figure, folded = (text.index(QUESTIONS["rank"]), text.index('alt="scores"'), text.index("<details>"))
    assert question < figure < folded
    assert text.count(base64.b64encode((tmp_path / "run" / "scores.png").read_bytes()).decode()) == 2  # and its run's
