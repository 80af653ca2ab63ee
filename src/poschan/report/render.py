"""A report as one self-contained HTML file (styles inline, figures embedded as data URIs: it opens offline) or as
Markdown (figures linked relative to the Markdown file)."""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from poschan.report.claims import Claim, claims_table, rules_text
from poschan.report.document import Section, Table
from poschan.report.sweep import sweep_table

_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
th { background: #f2f2f2; }
pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; margin: 0.5em 0; }
"""


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in table.rows)
    note = f"<p><em>{html.escape(table.note)}</em></p>" if table.note else ""
    return (f'<table data-name="{html.escape(table.name)}"><caption>{html.escape(table.name)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _environment(section: Section) -> str:
    env = {**section.run.env, "date": section.run.date or "not recorded", "elapsed_s": round(section.run.elapsed_s, 1)}
    return json.dumps(env)


def to_html(sections: Sequence[Section], claims: Sequence[Claim], title: str = "poschan report") -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    if claims:
        parts.append("<section><h2>Claims of the paper</h2>")
        parts.append(_html_table(claims_table(claims)))
        parts.append("<p>Verdict rules:</p><ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in rules_text(claims))
                     + "</ul></section>")
    sweep = sweep_table([s.run for s in sections])
    if sweep is not None:
        parts.append(f"<section><h2>Segmentation sweep</h2>{_html_table(sweep)}</section>")
    for s in sections:
        parts.append(f"<section><h2>{html.escape(s.title)}</h2>")
        parts.append(f"<p>Command: <code>{html.escape(s.run.command or 'not recorded')}</code></p>")
        parts.append(f"<p>Environment: <code>{html.escape(_environment(s))}</code></p>")
        if s.summary.rows:
            parts.append(_html_table(s.summary))
        parts.extend(_html_table(t) for t in s.tables)
        parts.extend(f'<figure><img src="{_data_uri(f)}" alt="{html.escape(f.name)}">'
                     f"<figcaption>{html.escape(f.name)}</figcaption></figure>" for f in s.figures)
        config = yaml.safe_dump(s.run.config, sort_keys=False)
        parts.append(f"<details><summary>resolved config</summary><pre>{html.escape(config)}</pre></details>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    lines = [f"*{table.name}*", "", "| " + " | ".join(_md_cell(c) for c in table.columns) + " |",
             "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.rows]
    return "\n".join(lines + ([f"\n*{table.note}*"] if table.note else []))


def to_markdown(sections: Sequence[Section], claims: Sequence[Claim], out: Path, title: str = "poschan report"
                ) -> str:
    """Markdown of the report written to ``out`` (figure links relative to its folder)."""
    parts = [f"# {title}"]
    if claims:
        parts += ["## Claims of the paper", _md_table(claims_table(claims)),
                  "Verdict rules:\n\n" + "\n".join(f"- {r}" for r in rules_text(claims))]
    sweep = sweep_table([s.run for s in sections])
    if sweep is not None:
        parts += ["## Segmentation sweep", _md_table(sweep)]
    for s in sections:
        parts += [f"## {s.title}", f"Command: `{s.run.command or 'not recorded'}`",
                  f"Environment: `{_environment(s)}`"]
        if s.summary.rows:
            parts.append(_md_table(s.summary))
        parts += [_md_table(t) for t in s.tables]
        parts += [f"![{f.name}]({Path(os.path.relpath(f, out.resolve().parent)).as_posix()})" for f in s.figures]
    return "\n\n".join(parts) + "\n"
