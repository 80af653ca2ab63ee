"""Build the documentation site (what `make docs` runs): the API reference from the docstrings (pdoc) in OUT/api/,
and OUT/index.html, a landing page linking it and the results pages that scripts/readme_results.py writes to docs/
(report.html, results.md; a page not generated yet is named, not linked). Offline; nothing is fetched.

    python scripts/docs_site.py --out docs poschan poschan.data ...
"""

from __future__ import annotations

import argparse
import html
import os
from pathlib import Path

import pdoc

PAGES_DIR = Path(__file__).resolve().parents[1] / "docs"
PAGES = {"report.html": "the HTML report: every run's statistics, tables and figures, and the claims decided on them",
         "results.md": "the same results in Markdown: the findings summary, then every run",
         "guide.md": "the guide: how commands run, the models, the segmentation analyses, scale, tests, benchmarks"}


def index_html(out: Path, pages: Path) -> str:
    """The landing page of a site in ``out``: links to the API reference and to each results page in ``pages``."""
    items = ['<a href="api/poschan.html">poschan</a>: the public API, then <a href="api/index.html">every '
             "documented module</a>"]
    for name, what in PAGES.items():
        link = Path(os.path.relpath(pages / name, out)).as_posix()
        items.append(f'<a href="{html.escape(link)}">{name}</a>: {what}' if (pages / name).is_file()
                     else f"{name}: not generated yet (<code>make readme</code> writes it)")
    body = "".join(f"<li>{item}</li>" for item in items)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>poschan documentation</title>'
            f"</head>\n<body><h1>poschan documentation</h1><ul>{body}</ul></body></html>\n")


def build(out: Path, modules: list[str], pages: Path = PAGES_DIR) -> None:
    """The site in ``out``: the API reference of ``modules`` in ``out/api`` and ``out/index.html``."""
    pdoc.render.configure(docformat="restructuredtext")
    pdoc.pdoc(*modules, output_directory=out / "api")
    (out / "index.html").write_text(index_html(out, pages))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the site's folder")
    parser.add_argument("--pages", type=Path, default=PAGES_DIR, help="where the results pages are (docs/)")
    parser.add_argument("modules", nargs="+", help="the modules of the API reference")
    args = parser.parse_args()
    build(args.out, args.modules, args.pages)
    print(f"documentation: {args.out / 'index.html'}")


if __name__ == "__main__":
    main()
