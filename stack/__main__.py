"""`make up` / `make down`: the whole platform on one machine.

    python -m stack up      embedded PostgreSQL (unless URLs are given), migrations, connections,
                            then the vendor sandbox, the Airflow API server (UI on :8080), scheduler,
                            DAG processor and triggerer in the foreground, then the demo (stack/demo.py;
                            DEMO=0 skips it); Ctrl-C stops everything it started.
    python -m stack down    from another shell: stop what `up` started, by pid.
    python -m stack migrate our migrations on INTEGRATIONS_DATABASE_URL, else on the embedded
                            server's `integrations` database (started for the moment if it is down).
    python -m stack psql [DATABASE]
                            psql on the embedded server (default database: integrations), its
                            password passed from .local/secrets.json, never shown.

The embedded PostgreSQL asks for a password (stack/embedded_pg.py): it is generated once into
.local/secrets.json (mode 600), and every URL `up` hands out (the integrations_db connection,
INTEGRATIONS_DATABASE_URL for the API server, Airflow's metadata database) carries it.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from stack import demo, demo_itsperfect, settings
from stack.connections import SANDBOX_DESCRIPTION, SANDBOX_REALMS, platform_connections, sandbox_connections
from stack.embedded_pg import SUPERUSER, EmbeddedPostgres, pg_bin
from stack.processes import ProcessGroup, say, stop_recorded, write_private
from stack.worker_name import WORKER_NAME_ENV

SANDBOX = [sys.executable, "-m", "sandbox", "--port", str(settings.SANDBOX_PORT),
           "--state-file", str(settings.SANDBOX_STATE_FILE)]
COMPONENTS = {
    "api-server": ["api-server", "--port", str(settings.API_PORT)],
    "scheduler": ["scheduler"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer"],
}


def embedded_server(*, with_password: bool = True) -> EmbeddedPostgres:
    """The `make up` server; its password comes from the secrets file (stopping it needs none)."""
    password = settings.local_secrets().postgres_password if with_password else None
    return EmbeddedPostgres(settings.PGDATA, settings.EMBEDDED_PG_PORT, password=password)


def resolve_databases() -> tuple[str, str, EmbeddedPostgres | None]:
    """(integrations URL, Airflow metadata SQLAlchemy URL, embedded server if one is needed)."""
    integrations = os.environ.get("INTEGRATIONS_DATABASE_URL")
    metadata = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    server = None
    if not integrations or not metadata:
        server = embedded_server()
        say(f"starting embedded PostgreSQL on 127.0.0.1:{server.port} (data in {settings.PGDATA})")
        server.start()
        if not integrations:
            server.create_database("integrations")
            integrations = server.url("integrations")
        if not metadata:
            server.create_database("airflow")
            metadata = server.url("airflow").replace("postgresql://", "postgresql+psycopg2://", 1)
    return integrations, metadata, server


def airflow_cli(env: dict, *args: str) -> None:
    subprocess.run([str(Path(sys.executable).with_name("airflow")), *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def write_connections(env: dict, integrations_url: str) -> list[str]:
    """Write integrations_db, and a sandbox connection for each vendor the user has not configured.

    Configured means: an AIRFLOW_CONN_<ID> variable, or a connection of that id in Airflow that is
    not exactly what we wrote (other credentials, or no sandbox description). Returns the vendor
    connection ids left on the sandbox.
    """
    with tempfile.TemporaryDirectory(dir=settings.LOCAL) as private:   # mode 0700: the export holds secrets
        exported = Path(private) / "connections.json"
        airflow_cli(env, "connections", "export", str(exported), "--file-format", "json")
        existing = json.loads(exported.read_text() or "{}")
    connections = platform_connections(integrations_url)
    sandboxed = []
    for conn_id, connection in sandbox_connections(f"http://127.0.0.1:{settings.SANDBOX_PORT}").items():
        if f"AIRFLOW_CONN_{conn_id.upper()}" in os.environ:
            continue
        current = existing.get(conn_id)
        ours = current is None or (
            current.get("description") == SANDBOX_DESCRIPTION
            and (current.get("login") or None) == connection.get("login")
            and (current.get("password") or None) == connection.get("password"))
        if ours:
            connections[conn_id] = connection
            sandboxed.append(conn_id)
    # `airflow connections import` wants `extra` as a JSON string, not an object.
    for connection in connections.values():
        connection["extra"] = json.dumps(connection.get("extra") or {})
    with tempfile.TemporaryDirectory(dir=settings.LOCAL) as private:
        path = Path(private) / "connections.json"
        write_private(path, json.dumps(connections))
        airflow_cli(env, "connections", "import", "--overwrite", str(path))
    return sandboxed


def wait_for_api(group: ProcessGroup, stop: dict, timeout_seconds: int = 180) -> None:
    url = f"http://127.0.0.1:{settings.API_PORT}/api/v2/monitor/health"
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline and not stop["requested"]:
        group.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    if not stop["requested"]:
        raise TimeoutError(f"the API server did not answer on {url} within {timeout_seconds} s; see {settings.LOG_DIR}")


def up() -> int:
    stop = {"requested": False}

    def request_stop(signum, frame):
        stop["requested"] = True
        if not started["airflow"]:
            raise KeyboardInterrupt  # still preparing: unwind through the finally below

    started = {"airflow": False}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_stop)
    stop_running_stack(quiet=True)  # a stack left running by an earlier `up` is stopped first
    settings.LOCAL.mkdir(parents=True, exist_ok=True)
    settings.UP_PID_FILE.write_text(str(os.getpid()))
    settings.LOG_DIR.mkdir(parents=True, exist_ok=True)
    group = ProcessGroup(settings.PID_FILE, settings.LOG_DIR)
    return_code = 0
    try:
        local = prepare()
        env = local.pop("env")
        if local["sandboxed"]:
            group.start("sandbox", SANDBOX, env)
        if settings.EXECUTOR == "celery":
            start_broker(group, env)
        for name, args in COMPONENTS.items():
            group.start(name, [str(Path(sys.executable).with_name("airflow")), *args], env)
        if settings.EXECUTOR == "celery":
            start_workers(group, env)
        started["airflow"] = True
        wait_for_api(group, stop)
        demo_lines = [] if stop["requested"] else run_demo(local, env, lambda: stop["requested"])
        if not stop["requested"]:
            say(banner(local, demo_lines))
        while not stop["requested"]:
            group.check_alive()
            time.sleep(1)
    except KeyboardInterrupt:
        say("\ninterrupted while starting")
    except Exception as exc:  # noqa: BLE001 - top-level guard: a component died or never came up; say which, clean up
        say(f"\nstack failed: {exc}", error=True)
        return_code = 1
    finally:
        started["airflow"] = True  # from here on a signal only sets the flag: cleanup must finish
        say("stopping Airflow processes")
        group.stop_all()
        stop_embedded()
        settings.UP_PID_FILE.unlink(missing_ok=True)
    return return_code


def start_broker(group: ProcessGroup, env: dict) -> None:
    from stack.redis_broker import RedisBroker

    broker = RedisBroker(settings.REDIS_DIR, settings.REDIS_PORT, settings.local_secrets().redis_password)
    group.start("redis", broker.command(), env)
    broker.wait_ready()


def start_workers(group: ProcessGroup, env: dict) -> None:
    """WORKERS Celery workers, each its own Celery node and its own hostname in task instances (worker1, ...).
    They share AIRFLOW_HOME's log folder, which the API server reads; only the first serves logs on the worker
    log port (one port per machine)."""
    for n in range(1, settings.WORKERS + 1):
        name = f"worker{n}"
        command = [str(Path(sys.executable).with_name("airflow")), "celery", "worker", "--celery-hostname",
                   f"{name}@%h", *(["--skip-serve-logs"] if n > 1 else [])]
        group.start(name, command, {**env, "AIRFLOW__CORE__HOSTNAME_CALLABLE": "stack.worker_name.hostname",
                                    WORKER_NAME_ENV: name})


def prepare() -> dict:
    """Databases, migrations, Airflow's metadata and connections; returns the processes' environment."""
    integrations_url, metadata_url, _ = resolve_databases()
    sys.path.insert(0, str(settings.ROOT / "plugins"))
    from etl import migrate
    from etl.db import connect

    with connect(integrations_url, autocommit=True) as conn:
        applied = migrate.migrate(conn)
    say(f"integrations database migrated ({len(applied)} new migration(s))")
    local = settings.local_secrets()
    env = {**os.environ, **settings.airflow_environment(metadata_url, local, integrations_url)}
    say("migrating the Airflow metadata database")
    airflow_cli(env, "db", "migrate")
    slots = os.environ.get("TRUSTFILE_SYNC_POOL_SLOTS", "4")
    airflow_cli(env, "pools", "set", "trustfile_sync", slots,
                "TrustFile connections synced at once (TRUSTFILE_SYNC_POOL_SLOTS)")
    sandboxed = write_connections(env, integrations_url)
    # The sandbox keeps its companies and issued tokens in its state file across restarts; without the file
    # (first start, deleted, a checkout from before it existed) it starts afresh and has forgotten them.
    sandbox_fresh = bool(sandboxed) and not settings.SANDBOX_STATE_FILE.exists()
    if sandbox_fresh:
        forget_sandbox_tokens(integrations_url, trustfile_sandboxed="trustfile_default" in sandboxed)
    return {"env": env, "admin_password": local.admin_password, "sandboxed": sandboxed,
            "sandbox_fresh": sandbox_fresh, "integrations_url": integrations_url}


SANDBOX_FORGOT = f"the local sandbox started without its saved state ({settings.SANDBOX_STATE_FILE.name})"


def forget_sandbox_tokens(integrations_url: str, *, trustfile_sandboxed: bool) -> None:
    """The sandbox starts afresh, so the OAuth tokens and TrustFile companies it issued to an earlier run
    no longer exist: the stored tokens go, and each connection that relied on them says what brings it
    back: authorizing QuickBooks again, or (signed up to the sandbox's TrustFile) provisioning again."""
    from etl.db import connect

    with connect(integrations_url) as conn, conn.transaction():
        conn.execute("DELETE FROM etl.oauth_tokens WHERE vendor = 'qbo' AND scope = ANY(%s)", (list(SANDBOX_REALMS),))
        conn.execute(
            """
            UPDATE trustfile.connections
               SET host_credentials = CASE WHEN at_sandbox_realm THEN NULL ELSE host_credentials END,
                   status_message = CASE WHEN at_sandbox_company THEN %(provision)s ELSE %(authorize)s END
              FROM (SELECT connection_id AS id,
                           host_system = 'qbo' AND host_identifier = ANY(%(realms)s) AS at_sandbox_realm,
                           %(trustfile)s AND company_token IS NOT NULL AS at_sandbox_company
                      FROM trustfile.connections) c
             WHERE connection_id = c.id AND ((at_sandbox_realm AND host_credentials IS NOT NULL) OR at_sandbox_company)
            """,
            {"realms": list(SANDBOX_REALMS), "trustfile": trustfile_sandboxed,
             "authorize": f"{SANDBOX_FORGOT}: authorize QuickBooks again",
             "provision": f"{SANDBOX_FORGOT}: the TrustFile company this connection was signed up as is gone; "
                          "delete the connection (DELETE /extractor/connections/{id}) and provision it again"})


def run_demo(local: dict, env: dict, stopping) -> list[str]:
    """Seed the demo tenants and start the scheduled DAGs' first runs; lines for the banner. A failure is
    reported and the platform runs on."""
    if not settings.DEMO:
        return ["DEMO=0: no demo tenant seeded, no DAG unpaused (Airflow creates DAGs paused: unpause them in the UI)"]
    if not local["sandboxed"]:
        return ["no demo: every vendor connection points at a real vendor"]
    platform = demo.Platform(env, local["integrations_url"])
    try:
        demo.parsed_dags(platform)     # every file of dags/ parsed: the provision DAG exists, no DAG is missed
        seeded = demo.seed(platform, local["sandboxed"], sandbox_fresh=local["sandbox_fresh"])
        lines = [s.line() for s in seeded]
        if demo_itsperfect.CONNECTOR in local["sandboxed"]:
            lines += demo_itsperfect.seed(platform)
        if demo.WEBHOOK_ACCOUNT in local["sandboxed"]:
            lines.append(demo.subscribe_webhooks(platform))     # before the first runs: the safety net's account
        if lines:
            lines += demo.start_first_runs(platform, stopping)
        return lines
    except Exception as exc:  # noqa: BLE001 - the demo is a convenience: say why it failed, keep the platform up
        say(f"demo: not seeded: {exc}", error=True)
        return [f"not seeded: {exc}"]


def banner(local: dict, demo_lines: list[str]) -> str:
    """Every address a user needs; secrets only by where they are kept (the admin password excepted:
    it is the login to this local UI)."""
    base = f"http://127.0.0.1:{settings.API_PORT}"
    sandboxed = ", ".join(local["sandboxed"]) or "none"
    if os.environ.get("AVALARA_TO_EXTRACTOR_TOKEN"):
        where, token = "your AVALARA_TO_EXTRACTOR_TOKEN", "$AVALARA_TO_EXTRACTOR_TOKEN"
    else:
        secrets_file = settings.SECRETS_FILE.resolve()
        where = f"avalara_to_extractor_token in {secrets_file} (mode 600)"
        read = 'import json,sys; print(json.load(open(sys.argv[1]))["avalara_to_extractor_token"])'
        token = f"$(python3 -c {shlex.quote(read)} {shlex.quote(str(secrets_file))})"
    lines = [
        "",
        "Airflow is up.",
        f"  UI:            {base}",
        f"  login:         {settings.ADMIN_USER} / {local['admin_password']}",
        f"  Integrations:  {base}/integrations/",
        f"  extractor API: {base}/extractor   (GET /extractor/health needs no token)",
        f"    bearer token: {where}; for instance",
        f'    curl -s -H "Authorization: Bearer {token}" {base}/extractor/connections',
        f"  vendors on the local sandbox (http://127.0.0.1:{settings.SANDBOX_PORT}): {sandboxed}",
    ]
    if local["sandboxed"]:
        lines.append(f"    its companies, records and tokens are kept in {settings.SANDBOX_STATE_FILE.resolve()}")
    if settings.EXECUTOR == "celery":
        workers = ", ".join(f"worker{n}" for n in range(1, settings.WORKERS + 1))
        lines.append(f"  executor:      CeleryExecutor, {settings.WORKERS} workers ({workers}, concurrency "
                     f"{settings.WORKER_CONCURRENCY} each), broker Redis on 127.0.0.1:{settings.REDIS_PORT}")
    if demo_lines:
        lines.append("  demo (docs/demo.md):")
        lines += [f"    {line}" for line in demo_lines]
    lines += [f"  logs:          {settings.LOG_DIR}", "Ctrl-C here, or `make down` from another shell, stops it.", ""]
    return "\n".join(lines)


def stop_embedded() -> None:
    server = embedded_server(with_password=False)
    if server.is_running():
        say("stopping embedded PostgreSQL")
        server.stop()


def stop_running_stack(*, quiet: bool) -> None:
    """Ask a running `up` to shut down (it stops its own children); clean up after a dead one."""
    up = _running_up()
    if up is not None:
        if not quiet:
            say(f"asking `make up` (pid {up.pid}) to stop")
        up.terminate()
        deadline = time.monotonic() + 90
        while _is_live(up) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _is_live(up):
            say(f"`make up` (pid {up.pid}) did not stop within 90 s; stopping its processes directly")
    stop_recorded(settings.PID_FILE, quiet=quiet)
    stop_embedded()
    settings.UP_PID_FILE.unlink(missing_ok=True)


def _running_up() -> psutil.Process | None:
    try:
        process = psutil.Process(int(settings.UP_PID_FILE.read_text()))
        return process if _is_live(process) and "stack" in " ".join(process.cmdline()) else None
    except (FileNotFoundError, ValueError, psutil.Error):
        return None


def _is_live(process: psutil.Process) -> bool:
    """Running and not a zombie (an exited `up` whose parent has not reaped it yet)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def down() -> int:
    stop_running_stack(quiet=False)
    say("stack stopped")
    return 0


def migrate_command() -> int:
    """`make migrate`: INTEGRATIONS_DATABASE_URL when set (etl.migrate's own default), else `make up`'s database."""
    sys.path.insert(0, str(settings.ROOT / "plugins"))
    from etl import migrate

    if os.environ.get("INTEGRATIONS_DATABASE_URL"):
        return migrate.main([])
    server = embedded_server()
    was_running = server.is_running()
    server.start()
    try:
        server.create_database("integrations")
        say(f"migrating {server.display_url('integrations')}")
        return migrate.main(["--url", server.url("integrations")])
    finally:
        if not was_running:
            server.stop()


def psql_command(database: str = "integrations") -> int:
    """psql on the embedded server, the password handed over in PGPASSWORD (never on the command line)."""
    server = embedded_server()
    if not server.is_running():
        say(f"the embedded PostgreSQL is not running (start it with `make up`); data in {settings.PGDATA}",
            error=True)
        return 1
    env = {**os.environ, "PGPASSWORD": server.password}
    command = [str(pg_bin.POSTGRES_BIN_PATH / "psql"), "-h", server.host, "-p", str(server.port),
               "-U", SUPERUSER, "-d", database]
    return subprocess.run(command, env=env).returncode


def main(argv: list[str]) -> int:
    commands = {"up": up, "down": down, "migrate": migrate_command}
    if argv[:1] == ["psql"] and len(argv) <= 2:
        return psql_command(*argv[1:])
    if len(argv) != 1 or argv[0] not in commands:
        say(__doc__, error=True)
        return 2
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
