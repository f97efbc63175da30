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
