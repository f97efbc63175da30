"""The docs name only what exists: paths, modules and their attributes, tables, DAGs, and the layers
that lint-imports checks. A rename in the code that the docs miss fails here."""
from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
TOP_FOLDERS = ("plugins", "dags", "docs", "include", "tests", "sandbox", "stack", "bench", "provider")
PACKAGES = ("etl", "hooks", "operators", "notifiers", "integrations")
QUOTED = re.compile(r"`([^`\n]+)`")


def quoted(doc: Path) -> list[str]:
    return QUOTED.findall(doc.read_text())


def is_template(name: str) -> bool:
    return any(mark in name for mark in ("<", "*", "NNNN", "…", "..."))


def sql_relations() -> set[str]:
    sources = [*(ROOT / "include" / "sql" / "migrations").glob("*.sql"), ROOT / "plugins" / "etl" / "migrate.py"]
    text = "\n".join(p.read_text() for p in sources)
    return {m.lower() for m in re.findall(r"CREATE (?:TABLE|VIEW|UNLOGGED TABLE)(?: IF NOT EXISTS)? (\w+\.\w+)",
                                           text, re.IGNORECASE)}


def resolves(dotted: str) -> bool:
    """`a.b.c` is a module, or an attribute of the longest module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_the_docs_name_exists(doc):
    missing = []
    for text in quoted(doc):
        path = text.split()[0].rstrip(".,:;)")
        if path.startswith(tuple(f"{top}/" for top in TOP_FOLDERS)) and not is_template(path):
            if not (ROOT / path.split("#")[0]).exists():
                missing.append(path)
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_and_name_the_docs_quote_exists(doc):
    relations = sql_relations()
    unknown = []
    for text in quoted(doc):
        name = re.split(r"[\s(]", text.strip())[0].rstrip(".,:;")
        if not re.fullmatch(r"[a-z_]+(\.[A-Za-z_][A-Za-z0-9_]*)+", name) or not name.startswith(
                tuple(f"{p}." for p in PACKAGES)):
            continue
        if name.lower() not in relations and not resolves(name):
            unknown.append(name)
    assert unknown == []


def dag_ids() -> set[str]:
    return {m for path in (ROOT / "dags").glob("*.py")
            for m in re.findall(r'dag_id="([a-z0-9_]+)"', path.read_text())}


def test_the_architecture_dag_table_lists_exactly_the_dags():
    table = re.search(r"## DAGs\n+\|.*\n\|[-| ]+\n((?:\|.*\n)+)", (ROOT / "docs" / "architecture.md").read_text())
    listed = {re.match(r"\| `([a-z0-9_]+)`", row).group(1) for row in table.group(1).splitlines()}
    assert listed == dag_ids()


def test_the_architecture_drawing_names_the_layers_lint_imports_checks():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c["layers"] for c in config["contracts"] if c["type"] == "layers")
    drawing = (ROOT / "docs" / "architecture.md").read_text().split("checked by lint-imports")[1].split("───\n")[1]
    drawn = [line.split()[0] for line in drawing.split("\n─")[0].splitlines()
             if line and not line.startswith(" ")]
    assert drawn == layers
