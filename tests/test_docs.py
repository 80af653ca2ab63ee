"""`make docs`: the API documentation builds from the docstrings (pdoc), public names and packages included."""

import re
from pathlib import Path

import pdoc

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


def test_api_docs_build_with_the_public_api_and_every_documented_package(tmp_path):
    modules = re.search(r"DOC_MODULES := (.*?)\n(?!\s)", MAKEFILE.read_text(), re.S).group(1).replace("\\", " ").split()
    assert modules[0] == "poschan" and "poschan.locate" in modules
    pdoc.render.configure(docformat="restructuredtext")
    pdoc.pdoc(*modules, output_directory=tmp_path)
    index = (tmp_path / "poschan.html").read_text()
    for name in ("rank_channels", "ChannelRanking", "ablation_curve", "region_attack", "AugShiftLoss", "load_run"):
        assert f'id="{name}"' in index, name
    assert "Rank the channels of" in index  # rank_channels' docstring, rendered
    assert (tmp_path / "poschan" / "locate" / "ranking.html").is_file()
