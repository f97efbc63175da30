"""docker-compose.yaml is parsed, not run (no Docker engine here): check the contract it must keep."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-init"}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_has_the_official_services(compose):
    assert AIRFLOW_SERVICES | {"postgres", "redis"} <= set(compose["services"])
    assert compose["services"]["postgres"]["image"] == "postgres:16"
    assert compose["services"]["redis"]["image"].startswith("redis:")


def test_every_airflow_service_shares_executor_jwt_secret_and_databases(compose):
    services = compose["services"]
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres/airflow"), name
        assert env["AIRFLOW_CONN_INTEGRATIONS_DB"].endswith("@postgres:5432/integrations"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
    secrets = {services[name]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for name in AIRFLOW_SERVICES}
    assert len(secrets) == 1


def test_project_folders_are_mounted_where_airflow_looks(compose):
    for name in AIRFLOW_SERVICES:
        targets = {_mount_target(volume) for volume in compose["services"][name]["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"} <= targets, name


def _mount_target(volume: str) -> str:
    """`SOURCE:TARGET[:MODE]`, where SOURCE may hold `${VAR:-default}` with a colon of its own."""
    return re.sub(r"\$\{[^}]*\}", "VAR", volume).split(":")[1]


def test_mounted_files_exist(compose):
    for volume in compose["services"]["postgres"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).is_file(), source
    assert (ROOT / compose["x-airflow-common"]["build"]["dockerfile"]).is_file()


def test_init_migrates_both_databases_and_others_wait_for_it(compose):
    services = compose["services"]
    init = services["airflow-init"]
    script = "\n".join(init["command"])
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert "python -m etl.migrate" in script
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully", name
        assert services[name]["restart"] == "always", name


def test_worker_can_scale(compose):
    worker = compose["services"]["airflow-worker"]
    assert worker["command"] == "celery worker"
    assert "container_name" not in worker and "ports" not in worker


def test_sandbox_service_serves_the_vendor_simulators(compose):
    sandbox = compose["services"]["sandbox"]
    assert sandbox["entrypoint"][:3] == ["python", "-m", "sandbox"]
    assert any(_mount_target(v) == "/opt/airflow/sandbox" for v in sandbox["volumes"])
    assert (ROOT / "sandbox" / "__main__.py").is_file()


# ---- the compose file and docs/configuration.md stay in step ------------------------------------------

CONFIGURATION = ROOT / "docs" / "configuration.md"
PLATFORM_SECTION = "The platform"                   # read by Airflow and our code in every deployment
LOCAL_SECTION = "The local stack, tests and benchmarks"
COMPOSE_SECTION = "docker compose"                  # what `docker compose` reads from the shell / .env
# Container variables that are Airflow's image plumbing, not configuration of the platform.
IMAGE_PLUMBING = {"PYTHONPATH", "DUMB_INIT_SETSID", "CONNECTION_CHECK_MAX_COUNT", "AIRFLOW_CONFIG"}


def _documented() -> dict[str, list[list[str]]]:
    """The rows of every table of docs/configuration.md, by the `## ` heading above it."""
    tables: dict[str, list[list[str]]] = {}
    heading = None
    for line in CONFIGURATION.read_text().splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.startswith("|") and heading and not set(line) <= set("|-: "):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if cells[0] not in ("variable", "connection"):
                tables.setdefault(heading, []).append(cells)
    return tables


def _names(cell: str) -> list[str]:
    return re.findall(r"`([A-Z_][A-Z0-9_]*)`", cell)


def _section(name: str) -> dict[str, list[str]]:
    rows = _documented().get(name)
    assert rows, f"docs/configuration.md has no table under '## {name}'"
    return {variable: row for row in rows for variable in _names(row[0])}


def _interpolations() -> list[tuple[str, str]]:
    """(variable, operator) of every `${VAR…}` compose substitutes (`$${…}` is left to the container's shell)."""
    text = (ROOT / "docker-compose.yaml").read_text()
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?]|)", text)


def test_every_platform_variable_reaches_every_airflow_container(compose):
    """Issue 9, point 12: INTEGRATIONS_FERNET_KEY, AVALARA_TO_EXTRACTOR_TOKEN and EXTRACTOR_PUBLIC_URL
    were never passed, so under compose the extractor API refused everything and the sync could not decrypt."""
    platform = _section(PLATFORM_SECTION)
    assert {"INTEGRATIONS_FERNET_KEY", "AVALARA_TO_EXTRACTOR_TOKEN", "EXTRACTOR_PUBLIC_URL",
            "INTEGRATIONS_DATABASE_URL", "AIRFLOW__CORE__FERNET_KEY"} <= set(platform)
    for name in sorted(AIRFLOW_SERVICES):
        env = compose["services"][name]["environment"]
        missing = sorted(set(platform) - set(env))
        assert not missing, f"{name} does not get {missing} (docs/configuration.md, '{PLATFORM_SECTION}')"


def test_secrets_the_platform_cannot_run_without_are_required_not_defaulted(compose):
    """An empty AIRFLOW__CORE__FERNET_KEY made Airflow store connection passwords in plain text: compose
    now stops with a message instead of starting without one."""
    env = compose["x-airflow-common"]["environment"]
    for name, source in {"AIRFLOW__CORE__FERNET_KEY": "AIRFLOW_FERNET_KEY",
                         "AIRFLOW__API_AUTH__JWT_SECRET": "AIRFLOW_JWT_SECRET",
                         "INTEGRATIONS_FERNET_KEY": "INTEGRATIONS_FERNET_KEY",
                         "AVALARA_TO_EXTRACTOR_TOKEN": "AVALARA_TO_EXTRACTOR_TOKEN",
                         "EXTRACTOR_PUBLIC_URL": "EXTRACTOR_PUBLIC_URL"}.items():
        assert re.fullmatch(r"\$\{" + source + r":\?[^}]+\}", str(env[name])), f"{name}: {env[name]!r}"


def test_database_urls_carry_one_required_password_and_one_integrations_database(compose):
    env = compose["x-airflow-common"]["environment"]
    urls = [env[name] for name in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND",
                                   "INTEGRATIONS_DATABASE_URL", "AIRFLOW_CONN_INTEGRATIONS_DB")]
    for url in urls:
        assert re.search(r"://airflow:\$\{POSTGRES_PASSWORD:\?[^}]+\}@postgres", url), url
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    # The extractor API (INTEGRATIONS_DATABASE_URL) and the tasks (integrations_db) use one database.
    assert env["INTEGRATIONS_DATABASE_URL"] == env["AIRFLOW_CONN_INTEGRATIONS_DB"]


def test_every_variable_compose_reads_is_documented_with_whether_it_is_required():
    documented = _section(COMPOSE_SECTION)
    used: dict[str, set[bool]] = {}
    for name, operator in _interpolations():
        used.setdefault(name, set()).add(operator == ":?")
    assert sorted(set(used) - set(documented)) == [], "read by docker-compose.yaml, not in docs/configuration.md"
    assert sorted(set(documented) - set(used)) == [], "in docs/configuration.md, not read by docker-compose.yaml"
    for name, required in used.items():
        assert len(required) == 1, f"{name} is required in one place of docker-compose.yaml and defaulted in another"
        says = documented[name][1].lower()
        assert says.startswith("yes" if required.pop() else "no"), f"{name}: docs say {documented[name][1]!r}"


def test_our_own_container_variables_are_documented(compose):
    platform = set(_section(PLATFORM_SECTION))
    for name in sorted(AIRFLOW_SERVICES | {"sandbox"}):
        ours = {key for key in compose["services"][name].get("environment") or {}
                if not key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "_AIRFLOW")) and key not in IMAGE_PLUMBING}
        assert sorted(ours - platform) == [], f"{name} sets variables docs/configuration.md does not describe"


def test_every_environment_variable_the_code_reads_is_documented():
    """plugins/, dags/, stack/, bench/ and the test fixtures: a variable read anywhere is in configuration.md."""
    documented = {name for rows in _documented().values() for row in rows for name in _names(row[0])}
    read = set()
    pattern = re.compile(r"(?:environ\.get\(|environ\[|getenv\()\s*\"([A-Z][A-Z0-9_]+)\""    # os.environ.get("X")
                         r"|^\w*_ENV\s*=\s*\"([A-Z][A-Z0-9_]+)\"", re.MULTILINE)              # X_ENV = "X"
    for folder in ("plugins", "dags", "stack", "bench", "sandbox"):
        for path in (ROOT / folder).rglob("*.py"):
            for match in pattern.finditer(path.read_text()):
                read.add((match.group(1) or match.group(2), path.relative_to(ROOT).as_posix()))
    for match in pattern.finditer((ROOT / "tests" / "conftest.py").read_text()):
        read.add((match.group(1) or match.group(2), "tests/conftest.py"))
    undocumented = sorted((name, where) for name, where in read
                          if name not in documented and not name.startswith("AIRFLOW_CONN_"))
    assert undocumented == [], "read by the code, missing from docs/configuration.md"
