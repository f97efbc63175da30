"""`EXECUTOR=celery make up`'s settings (issue 15): the CeleryExecutor on the local Redis broker, results in Airflow's
own database; the default stays the LocalExecutor; an unknown executor is refused naming the valid ones."""
from __future__ import annotations

import pytest

from stack import settings
from stack.redis_broker import RedisBroker

METADATA = "postgresql+psycopg2://postgres:pw@127.0.0.1:5433/airflow"


@pytest.fixture
def local(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "SECRETS_FILE", tmp_path / "secrets.json")
    monkeypatch.setattr(settings, "LOCAL", tmp_path)
    return settings.local_secrets()


def test_the_default_is_the_local_executor_with_nothing_more(local, monkeypatch):
    monkeypatch.setattr(settings, "EXECUTOR", "local")
    assert settings.executor_environment(METADATA, local) == {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}


def test_celery_uses_the_local_broker_with_its_generated_password_and_keeps_results_in_the_metadata_db(
        local, monkeypatch):
    monkeypatch.setattr(settings, "EXECUTOR", "celery")
    monkeypatch.setattr(settings, "REDIS_PORT", 6390)
    env = settings.executor_environment(METADATA, local)
    broker = RedisBroker(settings.REDIS_DIR, 6390, local.redis_password)
    assert env == {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor", "AIRFLOW__CELERY__BROKER_URL": broker.url(),
                   "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + METADATA,
                   "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(settings.WORKER_CONCURRENCY)}
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:") and local.redis_password
    assert settings.local_secrets().redis_password == local.redis_password       # kept across restarts


def test_an_unknown_executor_is_refused_naming_the_valid_ones(local, monkeypatch):
    monkeypatch.setattr(settings, "EXECUTOR", "kubernetes")
    with pytest.raises(ValueError, match="EXECUTOR='kubernetes': use one of local, celery"):
        settings.executor_environment(METADATA, local)
