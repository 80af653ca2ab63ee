"""A report as one self-contained HTML file (styles inline, figures embedded as data URIs: it opens offline) or as
Markdown (figures linked relative to the Markdown file; the report's own figures written beside it).

Both lead with the findings (one line per question of the claims table, ``findings``) and the headline figure, then
take one experiment at a time: what it asks, its headline figure, its verdicts, then each run's tables and figures
(folded in ``<details>`` in HTML, cut to their first rows with a link to the full CSV in Markdown)."""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from poschan.report import headline_figures as hf
from poschan.report.claims import Claim, claims_table, rules_text
from poschan.report.document import Section, Table
from poschan.report.figures import plt, save_figure
from poschan.report.findings import Finding, findings
from poschan.report.sweep import sweep_table

MD_ROWS = 12  # a Markdown table longer than this shows its first rows and links the rest

# What each experiment asks, in one sentence: the opening of its part of the report.
QUESTIONS = {
    "gap-study": "Does position survive global pooling, and does it live in the order of the pooled channels "
                 "(permuted at test time only, or per batch or per sample in training and test)?",
    "probe": "How much position do linear readouts find in the pooled vector of each layer: in the ordered vector, "
             "with its channels permuted, and in order-free codes (the sorted channels, a few moments)?",
    "position-map": "Can a readout of the pooled channels map where things are (horizontal, vertical and Gaussian "
                    "targets), and how much of it comes from zero padding?",
    "rank": "Which channels carry position (the flip ranking), and does the ranking beat a null of shuffled "
            "images?",
    "augshift": "Does AugShift (two shifted views, MSE between their pooled latents) make a classifier more "
                "translation invariant than plain training, shift augmentation or BlurPool, at what accuracy?",
    "train": "How accurate is the Fashion-MNIST classifier that the debiasing runs start from?",
    "debias": "Does zeroing a network's position-ranked channels, without retraining, buy translation invariance, "
              "and at what cost, against as many random channels and against retraining?",
    "seg-train": "How well do the segmenters of each scene layout and backbone segment (clean mIoU)?",
    "ablate": "Does a segmenter rely on its overall-position channels: does zeroing the top-N flip-ranked channels "
              "lower mIoU more than zeroing as many random (or magnitude-matched) channels?",
    "attack": "Does zeroing one region's position channels degrade that region more than the rest of the image, "
              "beyond as many random channels and beyond the opposite region's channels?",
    "census": "Do pretrained CNNs keep position after global pooling, layer by layer, and in their channel order "
              "(against their random-init twins)?",
    "budget-response": "Do the GAP study's permutation verdicts move with up to 16× more training?",
    "precision-check": "Does training in bf16 instead of fp32, from the same seeds, move any number or verdict?",
}


# The run figure that heads an experiment's part where the report draws none of its own (else its first figure).
OWN_HEADLINE = {"augshift": "methods", "budget-response": "scaling"}


@dataclass(frozen=True)
class Picture:
    """A figure of the report itself (beyond the runs' own), drawn when rendered."""

    name: str
    caption: str
    draw: Callable[[], plt.Figure | None] | None = None
    path: Path | None = None  # or a run's own figure, shown as it is


@dataclass(frozen=True)
class Part:
    """One experiment's part of the report."""

    experiment: str
    sections: list[Section]
    verdicts: list[Claim]
    picture: Picture | None
    table: Table | None = None  # a table across its runs (the segmentation sweep)


@dataclass(frozen=True)
class Report:
    title: str
    findings: list[Finding]
    claims: list[Claim]
    headline: Picture
    parts: list[Part]


def _picture(experiment: str, sections: Sequence[Section]) -> Picture | None:
    runs = [s.run for s in sections]
    if experiment == "gap-study":
        run = next((r for r in runs if r.path.name == "gap-study"), runs[0])
        return Picture("gap-study", hf.GAP_CAPTION, lambda: hf.gap_bars(run))
    if experiment == "ablate":
        return Picture("segmentation-sweep", hf.SWEEP_CAPTION, lambda: hf.sweep_figure(runs))
    if experiment == "attack":
        return Picture("region-attack", hf.ATTACK_CAPTION, lambda: hf.attack_figure(runs))
    first = next((s for s in sections if s.figures), None)
    if first is None:
        return None
    path = next((f for f in first.figures if f.stem == OWN_HEADLINE.get(experiment)), first.figures[0])
    return Picture(path.stem, f"{first.run.path.name}: {path.stem.replace('_', ' ')} (the run's own figure; its "
                              "other figures and tables are in its section below)", path=path)


def build_report(sections: Sequence[Section], found: Sequence[Claim], title: str = "poschan report") -> Report:
    """The report of ``sections`` (runs in order) with their claims ``found``: findings first, then one part per
    experiment in the order of its first run."""
    parts = []
    for experiment in dict.fromkeys(s.run.experiment for s in sections):
        own = [s for s in sections if s.run.experiment == experiment]
        names = {s.run.path.name for s in own}
        parts.append(Part(experiment, own, [c for c in found if c.run.split(":")[0] in names],
                          _picture(experiment, own), sweep_table([s.run for s in own]) if experiment == "ablate"
                          else None))
    runs = [s.run for s in sections]
    return Report(title, findings(found), list(found), Picture("headline", hf.HEADLINE_CAPTION,
                                                                lambda: hf.headline_figure(runs)), parts)


def _verdict_table(claims: Sequence[Claim]) -> Table:
    full = claims_table(claims)
    return Table("verdicts", full.columns, full.rows)


def _environment(section: Section) -> str:
    env = {**section.run.env, "date": section.run.date or "not recorded", "elapsed_s": round(section.run.elapsed_s, 1)}
    return json.dumps(env)


# HTML

_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 1.5em auto; color: #222; line-height: 1.4; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; margin: 0.5em 0; }
#findings li { margin: 0.3em 0; font-size: 0.92em; }
figcaption { font-size: 0.9em; color: #444; }
details { margin: 0.4em 0; }
summary { cursor: pointer; font-weight: bold; }
"""


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in table.rows)
    notes = [table.note] if table.note else []
    if table.total is not None:
        notes.append(f"the first {len(table.rows)} of {table.total} rows; all in {table.name}.csv")
    note = "".join(f"<p><em>{html.escape(n)}</em></p>" for n in notes)
    return (f'<table data-name="{html.escape(table.name)}"><caption>{html.escape(table.name)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}")


def _folded(summary: str, body: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


def _png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _figure(src: str, alt: str, caption: str) -> str:
    return (f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}"><figcaption>{html.escape(caption)}'
            "</figcaption></figure>")


def _uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class _Images:
    """How a page shows figures: embedded as data URIs (``page`` None: the page opens alone), or linked relative to
    the page at ``page``, the report's own pictures from ``pictures`` (where ``to_markdown`` wrote them)."""

    page: Path | None = None
    pictures: Path | None = None

    def file(self, path: Path, alt: str, caption: str) -> str:
        src = _uri(path.read_bytes()) if self.page is None else _relative(path, self.page)
        return _figure(src, alt, caption)

    def picture(self, picture: Picture | None) -> str:
        if picture is None:
            return ""
        if picture.path is not None:
            return self.file(picture.path, picture.name, picture.caption)
        if self.page is not None:
            path = self.pictures / f"{picture.name}.png"
            return self.file(path, picture.name, picture.caption) if path.is_file() else ""
        fig = picture.draw()
        return "" if fig is None else _figure(_uri(_png(fig)), picture.name, picture.caption)


def _html_run(s: Section, images: _Images) -> str:
    parts = [f"<p>Command: <code>{html.escape(s.run.command or 'not recorded')}</code></p>",
             f"<p>Environment: <code>{html.escape(_environment(s))}</code></p>"]
    if s.summary.rows:
        parts.append(_html_table(s.summary))
    parts += [_html_table(t) for t in s.tables]
    parts += [images.file(f, f.name, f"{s.run.path.name}: {f.stem.replace('_', ' ')}") for f in s.figures]
    config = yaml.safe_dump(s.run.config, sort_keys=False)
    parts.append(f"<p>Resolved config:</p><pre>{html.escape(config)}</pre>")
    return _folded(f"{s.title}: tables, figures and config", "".join(parts))


def to_html(report: Report, linked: tuple[Path, Path] | None = None) -> str:
    """The report as one HTML page: every figure embedded, or, with ``linked`` (the page's path and the folder of
    the report's own pictures, as ``to_markdown`` wrote them), linked relative to the page."""
    images = _Images(*linked) if linked else _Images()
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(report.title)}</h1>"]
    if report.findings:
        groups = "".join(f"<h3>{name}</h3><ul>" + "".join(
            f"<li><strong>{html.escape(f.question)}</strong>: {html.escape(f.detail())}</li>" for f in found) + "</ul>"
            for beyond, name in GROUPS if (found := [f for f in report.findings if f.beyond == beyond]))
        parts.append(f"<section id='findings'><h2>Findings</h2>{groups}{images.picture(report.headline)}")
        rules = "<ul>" + "".join(f"<li>{html.escape(r)}</li>" for r in rules_text(report.claims)) + "</ul>"
        parts.append(_folded("How the verdicts are decided", rules) + "</section>")
    for part in report.parts:
        parts.append(f"<section><h2>{html.escape(part.experiment)}</h2>"
                     f"<p>{html.escape(QUESTIONS.get(part.experiment, ''))}</p>{images.picture(part.picture)}")
        if part.verdicts:
            table = _html_table(_verdict_table(part.verdicts))
            parts.append(table if len(part.verdicts) <= MD_ROWS else
                         _folded(f"{len(part.verdicts)} verdicts of {part.experiment}", table))
        if part.table is not None:
            parts.append(_html_table(part.table))
        parts += [_html_run(s, images) for s in part.sections]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# Markdown

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table, link: str | None = None) -> str:
    """``table`` in Markdown, cut to MD_ROWS rows (the rest at ``link``, or in the HTML report)."""
    rows = table.rows[:MD_ROWS]
    lines = [f"*{table.name}*", "", "| " + " | ".join(_md_cell(c) for c in table.columns) + " |",
             "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    notes = [table.note] if table.note else []
    total = table.total or len(table.rows)
    if total > len(rows):
        where = f"[{Path(link).name}]({link})" if link else "the HTML report"
        notes.append(f"the first {len(rows)} of {total} rows; all in {where}")
    return "\n".join(lines + [f"\n*{n}*" for n in notes])


def _relative(path: Path, out: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out.resolve().parent)).as_posix()


def figure_folder(out: Path) -> Path:
    """Where a Markdown report at ``out`` keeps its own figures."""
    return out.with_name(f"{out.stem}_figures")


def _md_picture(picture: Picture | None, out: Path, folder: Path) -> list[str]:
    if picture is not None and picture.path is not None:
        return [f"![{picture.name}]({_relative(picture.path, out)})", f"*{picture.caption}*"]
    fig = picture.draw() if picture else None
    if fig is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    save_figure(fig, folder / f"{picture.name}.png")
    return [f"![{picture.name}]({_relative(figure_folder(out) / f'{picture.name}.png', out)})", f"*{picture.caption}*"]


GROUPS = ((False, "The paper's claims"), (True, "Beyond the paper"))


def findings_markdown(report: Report) -> str:
    """The findings lines, the paper's claims then the results beyond it, as the report and the README show them."""
    return "\n\n".join(f"**{name}**\n\n" + "\n".join(f.markdown() for f in found) for beyond, name in GROUPS
                       if (found := [f for f in report.findings if f.beyond == beyond]))


def to_markdown(report: Report, out: Path, figures: Path | None = None) -> str:
    """Markdown of the report to be written to ``out``, linking its own figures in ``figure_folder(out)``; they are
    written there (or to ``figures``, to be moved there)."""
    folder = figures or figure_folder(out)
    parts = [f"# {report.title}"]
    if report.findings:
        parts += ["## Findings", findings_markdown(report), *_md_picture(report.headline, out, folder),
                  "Verdict rules:\n\n" + "\n".join(f"- {r}" for r in rules_text(report.claims))]
    for part in report.parts:
        parts += [f"## {part.experiment}", QUESTIONS.get(part.experiment, ""), *_md_picture(part.picture, out, folder)]
        if part.verdicts:
            parts.append(_md_table(_verdict_table(part.verdicts)))
        if part.table is not None:
            parts.append(_md_table(part.table))
        for s in part.sections:
            parts += [f"### {s.title}", f"Command: `{s.run.command or 'not recorded'}`"]
            if s.summary.rows:
                parts.append(_md_table(s.summary))
            parts += [_md_table(t, _relative(s.run.path / f"{t.name}.csv", out)) for t in s.tables]
            parts += [f"![{f.name}]({_relative(f, out)})" for f in s.figures]
    return "\n\n".join(p for p in parts if p) + "\n"
