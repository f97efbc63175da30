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


# ---- DAG ids, Params, environment variables, runbook links and error texts the docs name --------

SNAKE = r"[a-z][a-z0-9]*(?:_[a-z0-9]+)+"
DAG_MENTIONS = [re.compile(p) for p in (
    rf"`({SNAKE})`\s+DAGs?\b", rf"\bDAGs?\s+`({SNAKE})`", rf"\b[Tt]rigger(?:s|ed|ing)?\s+(?:the\s+)?`({SNAKE})`",
    rf"`({SNAKE})`\s+\((?:manual|hourly|daily|weekly)\b")]
ITALIC = re.compile(rf"(?<![*\w])\*({SNAKE})\*(?![*\w])")
PARAM_SETTING = re.compile(r"`([a-z_]+)(?:=|` = `)([^`\s]+)`")
ENV_VAR = re.compile(r"`\$?\{?([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)(?![\w<…*])")
CODE_FOLDERS = ("plugins", "dags", "stack", "bench", "sandbox", "provider")
CONFIG_FILES = ("docker-compose.yaml", "Makefile", "Dockerfile", "tests/conftest.py")


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags


def dag_docs(dags) -> dict[str, str]:
    """Every doc page and every DAG's own doc (what the UI shows on the DAG's page)."""
    return {**{str(doc.relative_to(ROOT)): doc.read_text() for doc in DOCS},
            **{f"dags: {dag_id}": dag.doc_md or "" for dag_id, dag in dags.items()}}


def test_every_dag_id_the_docs_name_exists(dags):
    named = {(where, m) for where, text in dag_docs(dags).items() for p in DAG_MENTIONS for m in p.findall(text)}
    assert named, "no DAG named anywhere: the patterns are broken"
    assert sorted((w, m) for w, m in named if m not in dags) == []


def test_every_param_task_and_setting_the_docs_name_exists(dags):
    """Italic names (*retention_days*) are Params, tasks or DAGs; `param=value` names a Param and one of its
    choices; a table headed `param` lists Params. Params are those of the DAGs and of the engine's backfill
    form (operators.incremental_load.backfill_params), whose choices add to those of a DAG's Param of that name."""
    from operators.incremental_load import backfill_params

    params: dict[str, dict] = {}
    for form in [*({n: d.params.get_param(n) for n in d.params} for d in dags.values()), backfill_params()]:
        for name, param in form.items():
            schema = params.setdefault(name, {"enum": []})
            schema["enum"] = [*schema["enum"], *param.schema.get("enum", [None])]
    known = set(params) | set(dags) | {task.task_id for dag in dags.values() for task in dag.tasks}
    unknown = []
    for where, text in dag_docs(dags).items():
        unknown += [(where, name) for name in ITALIC.findall(text) if name not in known]
        for name, value in PARAM_SETTING.findall(text):
            if name in params and None not in params[name]["enum"] and value not in params[name]["enum"]:
                unknown.append((where, f"{name}={value}"))
        for table in re.findall(r"^\| *param *\|.*\n\|[-| ]+\n((?:\|.*\n)+)", text, re.MULTILINE | re.IGNORECASE):
            unknown += [(where, name) for row in table.splitlines()
                        for name in re.findall(r"`([^`]+)`", row.split("|")[1]) if name not in params]
    assert unknown == []


def _code_text() -> str:
    paths = [p for folder in CODE_FOLDERS for p in (ROOT / folder).rglob("*.py")]
    return "\n".join([*(p.read_text() for p in paths), *((ROOT / f).read_text() for f in CONFIG_FILES)])


def test_every_environment_variable_the_docs_name_exists():
    """The other direction of tests/stack/test_compose.py's check: a variable the docs name is read by our code,
    the compose file or the Makefile, or is one of Airflow's own settings."""
    from airflow.configuration import conf

    code = _code_text()
    missing = []
    for doc in DOCS:
        for name in set(ENV_VAR.findall(doc.read_text())):
            if re.search(rf"(?<![A-Z0-9_]){name}(?![A-Z0-9_])", code):
                continue
            parts = name.split("__")
            if len(parts) == 3 and parts[0] == "AIRFLOW" and conf.has_option(parts[1].lower(), parts[2].lower()):
                continue
            missing.append((str(doc.relative_to(ROOT)), name))
    assert sorted(missing) == []


def headings(doc: str) -> set[str]:
    from notifiers.runbook import slug

    text = re.sub(r"```.*?```", "", (ROOT / "docs" / doc).read_text(), flags=re.DOTALL)
    return {slug(h) for h in re.findall(r"^#+ +(.+?) *$", text, re.MULTILINE)}


def test_every_docs_link_the_code_makes_lands_on_a_heading():
    """A runbook link in an alert names a doc and one of its headings; the page anchors them (notifiers.runbook)."""
    from notifiers.runbook import slug

    links = set()
    for folder in ("plugins", "dags"):
        for path in (ROOT / folder).rglob("*.py"):
            links |= set(re.findall(r"\"([\w/.-]+\.md)\",\s*\"([^\"]+)\"", path.read_text()))
    assert links, "no runbook link found in the code"
    assert sorted((doc, h) for doc, h in links if slug(h) not in headings(doc)) == []


def _literals() -> str:
    """Every string literal of the code, an f-string's placeholders written `…` as the docs write them."""
    import ast

    out = []
    for folder in ("plugins", "dags", "stack"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.JoinedStr):
                    out.append("".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values))
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    out.append(node.value)
    return "\n".join(out)


def test_the_runbooks_error_texts_are_the_codes():
    """Each quoted error in the runbook's tables is what the code says: every literal stretch of it (between
    `…`, `<placeholder>`, `NNNN_x.sql` and the `: ` that joins a prefix to a message, without the punctuation
    around them) is in a string of the code, and a leading exception name is a class."""
    literals = _literals()
    code = _code_text()
    wrong = []
    for table in re.findall(r"^(\|.*\n\|[-| ]+\n(?:\|.*\n)+)", (ROOT / "docs" / "runbook.md").read_text(),
                            re.MULTILINE):
        header, _, *rows = table.splitlines()
        columns = [i for i, cell in enumerate(header.split("|")) if "error" in cell]
        for row in rows:
            for column in columns:
                for text in re.findall(r"`([^`]+)`", row.split("|")[column]):
                    name = re.match(r"([A-Z]\w+): ", text)
                    if name and not (re.search(rf"^class {name.group(1)}\(", code, re.MULTILINE)
                                     or name.group(1) in dir(__builtins__)):
                        wrong.append(text)
                    message = text[name.end():] if name else text
                    for stretch in re.split(r"'?…'?|<[^>]+>|NNNN_\w+\.sql|: ", message):
                        stretch = stretch.strip(" ().,;:='")         # punctuation around a placeholder
                        if len(stretch) >= 12 and stretch not in literals:
                            wrong.append(f"{text!r}: {stretch!r}")
    assert wrong == []
