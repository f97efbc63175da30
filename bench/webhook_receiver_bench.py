"""The ServiceTrade webhook receiver under load from a second process, then with its database stopped for 10 s.

Real parts: Airflow's API server app with our plugins (bench.webhook_api_server, as many workers as `make up` runs),
PostgreSQL, and a sender process (bench.webhook_load) that behaves as ServiceTrade: open loop at a fixed rate,
5 s answer limit, 3 attempts with retries on 5xx. Reported per phase: the sender's figures (rate, p50/p99/max,
answers) and what the inbox holds afterwards: messages stored against messages sent (lost = sent - stored),
duplicated messages, and whether every event counts each message naming it exactly once.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg

from etl import db, migrate
from integrations.servicetrade.inbox import secret_digest
from sandbox.launch import free_port
from stack import settings
from stack.embedded_pg import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
ACCOUNT = "servicetrade_bench"
RATE = float(os.environ.get("BENCH_WEBHOOK_RATE", "500"))
SECONDS = float(os.environ.get("BENCH_WEBHOOK_SECONDS", "20"))
OUTAGE_START, OUTAGE_SECONDS = 8.0, 10.0

# Per (message, entity) the receiver kept, and per event the messages folded into it: equal when no message
# was folded twice and none was left out.
FOLDED = """
WITH kept AS (
    SELECT DISTINCT i.id, lower(e->'entity'->>'type') AS entity_type, (e->'entity'->>'id')::bigint AS entity_id
      FROM servicetrade.webhook_inbox i, jsonb_array_elements(convert_from(i.body, 'UTF8')::jsonb->'data') e
     WHERE i.malformed IS NULL AND lower(e->'entity'->>'type') IN ('job', 'jobitem', 'invoice', 'location'))
SELECT (SELECT count(*) FROM kept),
       (SELECT coalesce(sum(notifications), 0) FROM servicetrade.webhook_events),
       (SELECT count(*) FROM (SELECT DISTINCT entity_type, entity_id FROM kept) d),
       (SELECT count(*) FROM servicetrade.webhook_events)
"""


def _inbox(url: str) -> dict:
    with psycopg.connect(url) as conn:
        messages, distinct = conn.execute("SELECT count(*), count(DISTINCT message_id) FROM "
                                          "servicetrade.webhook_inbox").fetchone()
        pairs, folded, entities, events = conn.execute(FOLDED).fetchone()
    return {"stored": messages, "duplicated_messages": messages - distinct, "entity_notifications": pairs,
            "folded_into_events": folded, "distinct_entities": entities, "events": events}


def _reset(url: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE servicetrade.webhook_inbox, servicetrade.webhook_events")


def _load(target: str, rate: float, seconds: float) -> dict:
    sender = subprocess.run([sys.executable, "-m", "bench.webhook_load", target, "--rate", str(rate),
                             "--seconds", str(seconds)], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])})
    if sender.returncode != 0:
        raise RuntimeError(f"the sender failed:\n{sender.stderr[-3000:]}")
    return json.loads(sender.stdout.strip().splitlines()[-1])


def _start_api(url: str, home: str, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
           "AIRFLOW_HOME": home, "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url.replace(
               "postgresql://", "postgresql+psycopg2://").rsplit("/", 1)[0] + "/postgres",
           "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32), "INTEGRATIONS_DATABASE_URL": url,
           "AIRFLOW_API_WORKERS": str(settings.API_WORKERS),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "bench.webhook_api_server", str(port)], cwd=ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2).close()
            return server, port
        except urllib.error.HTTPError:
            return server, port
        except OSError:
            if server.poll() is not None:
                raise RuntimeError(f"the API server exited:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("the API server did not start within 120 s")


def main() -> dict:
    secret = secrets.token_urlsafe(32)
    pg = EmbeddedPostgres(settings.LOCAL / "bench-webhooks-postgres" / "data", free_port(),
                          password=secrets.token_urlsafe(32))
    pg.stop()    # one an interrupted run left behind, on another port
    pg.start()
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS webhooks WITH (FORCE)")
        conn.execute("CREATE DATABASE webhooks")
    url = pg.url("webhooks")
    with db.connect(url, autocommit=True) as conn:
        migrate.migrate(conn)
        conn.execute("INSERT INTO servicetrade.webhook_accounts (account, secret_sha256) VALUES (%s, %s)",
                     (ACCOUNT, secret_digest(secret)))
    home = tempfile.mkdtemp(prefix="bench-webhooks-")
    server, port = _start_api(url, home, Path(home) / "api-server.log")
    target = f"http://127.0.0.1:{port}/servicetrade-webhooks/{ACCOUNT}/{secret}"
    results = {}
    try:
        _load(target, 50, 2)    # workers warm: the app is built on its first request
        _reset(url)
        steady = _load(target, RATE, SECONDS)
        results["steady"] = {**steady, **_inbox(url)}
        _reset(url)
        stopper = threading.Timer(OUTAGE_START, pg.stop)
        starter = threading.Timer(OUTAGE_START + OUTAGE_SECONDS, pg.start)
        stopper.start()
        starter.start()
        blink = _load(target, RATE / 2, 30)
        starter.join()
        results["database_stopped_10s"] = {**blink, **_inbox(url)}
    finally:
        server.terminate()
        server.wait(timeout=30)
        pg.stop()
    for phase, figures in results.items():
        figures["lost"] = figures["sent"] - figures["stored"]
        print(f"webhook receiver, {phase}: {figures['rate_achieved']} msg/s for {figures['sent']} messages, "
              f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms; answers "
              f"{figures['answers']}; stored {figures['stored']}, lost {figures['lost']}, duplicated "
              f"{figures['duplicated_messages']}; events {figures['events']} for {figures['distinct_entities']} "
              f"entities, folded {figures['folded_into_events']} of {figures['entity_notifications']} notifications")
    return results


if __name__ == "__main__":
    main()
