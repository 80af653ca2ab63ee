"""The rules of the house that code review alone would not keep: imports point down, and the mutation table (the
bugs the suite must catch) names code that exists."""

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "poschan"
TRAINING = {"poschan.engine", "poschan.training"}  # the training code itself (the loop, and the recipe over it)
DRIVERS = ("poschan.experiments", "poschan.cli", "poschan.__main__")
LOWER = ("poschan.data", "poschan.models", "poschan.taps", "poschan.runtime", "poschan.errors")
METHODS = ("poschan.measure", "poschan.locate", "poschan.control")


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("poschan")}


LIBRARY = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py") if not _module(p).startswith(DRIVERS)}


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("module", sorted(LIBRARY))
def test_library_modules_never_import_drivers_or_the_engine(module):
    assert not [n for n in LIBRARY[module] if _under(n, DRIVERS)], module
    if module not in TRAINING:
        assert "poschan.engine" not in LIBRARY[module], module


@pytest.mark.parametrize("module", sorted(m for m in LIBRARY if _under(m, LOWER)))
def test_data_models_and_taps_never_import_the_methods(module):
    assert not [n for n in LIBRARY[module] if _under(n, METHODS + ("poschan.metrics", "poschan.report"))], module


def test_relative_imports_are_not_used():
    for path in PACKAGE.rglob("*.py"):
        assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(path.read_text()))), path


def test_every_planted_bug_of_the_mutation_table_names_code_that_exists_once():
    spec = importlib.util.spec_from_file_location("mutation_check", ROOT / "scripts" / "mutation_check.py")
    table = importlib.util.module_from_spec(spec)
    sys.modules["mutation_check"] = table
    spec.loader.exec_module(table)
    for m in table.MUTATIONS:
        assert (ROOT / m.file).read_text().count(m.original) == 1, m.name
        assert all((ROOT / k).is_file() for k in m.killers), m.name


def test_nothing_but_the_entry_points_imports_the_command_line():
    for path in PACKAGE.rglob("*.py"):
        if _module(path) not in ("poschan.cli", "poschan.__main__"):
            assert "poschan.cli" not in _imports(path), path


def test_the_commands_are_thin_drivers_of_the_library():
    """experiments/ holds at most 15% of the source, and no statistic is taken apart by hand there (tables.py
    writes statistics: flat_stats, format_stat)."""
    lines = {p: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    drivers = sum(n for p, n in lines.items() if "experiments" in p.relative_to(PACKAGE).parts)
    assert drivers <= 0.15 * sum(lines.values()), (drivers, sum(lines.values()))
    for path in (PACKAGE / "experiments").glob("*.py"):
        text = path.read_text()
        assert "ci95'][0]" not in text and 'ci95"][0]' not in text, path
