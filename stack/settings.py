"""Where the local platform keeps its state, and the environment every Airflow process gets."""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet

from stack.processes import write_private

ROOT = Path(__file__).resolve().parents[1]
# Ignored by git: data, logs, pids, generated secrets. STACK_LOCAL_DIR moves it (the stack test
# runs a second platform beside a developer's own).
LOCAL = Path(os.environ.get("STACK_LOCAL_DIR") or ROOT / ".local")
PGDATA = LOCAL / "postgres" / "data"
AIRFLOW_HOME = LOCAL / "airflow"
LOG_DIR = LOCAL / "logs"
PID_FILE = LOCAL / "stack.pids"
UP_PID_FILE = LOCAL / "stack.up.pid"
SECRETS_FILE = LOCAL / "secrets.json"
# The vendor sandbox's companies, records and issued tokens, kept across restarts (sandbox/core.py, StateFile).
SANDBOX_STATE_FILE = LOCAL / "sandbox-state.json"

EMBEDDED_PG_PORT = int(os.environ.get("EMBEDDED_PG_PORT", "5433"))
API_PORT = int(os.environ.get("AIRFLOW_API_PORT", "8080"))
SANDBOX_PORT = int(os.environ.get("SANDBOX_PORT", "8090"))
# Airflow's advice: about one API server worker per core. One worker tops out near 500 ServiceTrade webhook
# deliveries a second on this 2-core machine (docs/benchmarks.md); two keep p99 near 100 ms there.
API_WORKERS = int(os.environ.get("AIRFLOW_API_WORKERS", "2"))
# `EXECUTOR=celery WORKERS=2 make up`: Airflow's CeleryExecutor with a local Redis broker (stack/redis_broker.py)
# and WORKERS Celery workers; the default stays the LocalExecutor, with nothing more to start.
EXECUTORS = ("local", "celery")
EXECUTOR = os.environ.get("EXECUTOR", "local").strip().lower()
WORKERS = int(os.environ.get("WORKERS", "2"))
WORKER_CONCURRENCY = int(os.environ.get("WORKER_CONCURRENCY", "4"))
REDIS_PORT = int(os.environ.get("REDIS_PORT", "6380"))
REDIS_DIR = LOCAL / "redis"
ADMIN_USER = "admin"
# `DEMO=0 make up` starts empty: no demo tenants, and the DAGs stay paused as Airflow creates them (stack/demo.py).
DEMO = os.environ.get("DEMO", "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True, repr=False)   # every field is a secret: no repr() that would print them
class LocalSecrets:
    """Generated once per checkout and kept in .local/, so restarts keep sessions and encrypted values."""

    fernet_key: str
    jwt_secret: str
    admin_password: str
    integrations_fernet_key: str
    avalara_to_extractor_token: str
    postgres_password: str            # the embedded PostgreSQL's superuser (scram-sha-256; stack/embedded_pg.py)
    redis_password: str               # the Celery broker's (stack/redis_broker.py)


def local_secrets() -> LocalSecrets:
    LOCAL.mkdir(parents=True, exist_ok=True)
    fresh = {
        "fernet_key": lambda: Fernet.generate_key().decode(),
        "jwt_secret": lambda: secrets.token_urlsafe(32),
        "admin_password": lambda: secrets.token_urlsafe(12),
        "integrations_fernet_key": lambda: Fernet.generate_key().decode(),
        "avalara_to_extractor_token": lambda: secrets.token_urlsafe(32),
        "postgres_password": lambda: secrets.token_urlsafe(32),
        "redis_password": lambda: secrets.token_urlsafe(32),
    }
    stored = json.loads(SECRETS_FILE.read_text()) if SECRETS_FILE.exists() else {}
    missing = [name for name in fresh if name not in stored]
    for name in missing:  # a checkout from before a secret existed gets it added, the others kept
        stored[name] = fresh[name]()
    if missing:
        write_private(SECRETS_FILE, json.dumps(stored))
    return LocalSecrets(**{name: stored[name] for name in fresh})


def airflow_environment(metadata_url: str, local: LocalSecrets, integrations_url: str) -> dict[str, str]:
    """Configuration shared by the CLI calls and the four Airflow processes of `make up`."""
    passwords_file = AIRFLOW_HOME / "simple_auth_manager_passwords.json.generated"
    AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    write_private(passwords_file, json.dumps({ADMIN_USER: local.admin_password}))
    return {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        **executor_environment(metadata_url, local),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__FERNET_KEY": local.fernet_key,
        "INTEGRATIONS_FERNET_KEY": os.environ.get("INTEGRATIONS_FERNET_KEY") or local.integrations_fernet_key,
        # The extractor API (mounted in the API server) reads our database and TrustFile's token from here.
        "INTEGRATIONS_DATABASE_URL": integrations_url,
        "AVALARA_TO_EXTRACTOR_TOKEN": os.environ.get("AVALARA_TO_EXTRACTOR_TOKEN") or local.avalara_to_extractor_token,
        # Where browsers reach the extractor API: Intuit sends the QuickBooks consent back to
        # <this>/oauth/qbo/callback, which must be a redirect URI of the Intuit app.
        "EXTRACTOR_PUBLIC_URL": os.environ.get("EXTRACTOR_PUBLIC_URL") or f"http://127.0.0.1:{API_PORT}/extractor",
        # Where ServiceTrade delivers webhooks (servicetrade_webhook_subscription's default receiver URL).
        "SERVICETRADE_WEBHOOK_URL": os.environ.get("SERVICETRADE_WEBHOOK_URL")
        or f"http://127.0.0.1:{API_PORT}/servicetrade-webhooks",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{API_PORT}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(API_PORT),
        "AIRFLOW__API__WORKERS": str(API_WORKERS),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{API_PORT}",
        "AIRFLOW__API_AUTH__JWT_SECRET": local.jwt_secret,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
    }


def executor_environment(metadata_url: str, local: LocalSecrets) -> dict[str, str]:
    """The executor's settings: LocalExecutor, or the CeleryExecutor with the local Redis broker, results kept
    in Airflow's own database."""
    if EXECUTOR not in EXECUTORS:
        raise ValueError(f"EXECUTOR={EXECUTOR!r}: use one of {', '.join(EXECUTORS)}")
    if EXECUTOR == "local":
        return {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
    from stack.redis_broker import RedisBroker

    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": RedisBroker(REDIS_DIR, REDIS_PORT, local.redis_password).url(),
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
    }
