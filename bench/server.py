"""The PostgreSQL a benchmark runs against: BENCH_DATABASE_URL, or an embedded server of its own."""
from __future__ import annotations

import contextlib
import os
import secrets

import psycopg
from psycopg import sql

from sandbox.launch import free_port
from stack import settings
from stack.embedded_pg import EmbeddedPostgres


@contextlib.contextmanager
def bench_database(name: str = "bench"):
    """Yield the URL of a fresh database `name`, dropped afterwards."""
    server_url = os.environ.get("BENCH_DATABASE_URL")
    server = None
    if not server_url:
        # The same server as `make up`'s (password authentication), with a password of this run's own.
        server = EmbeddedPostgres(settings.LOCAL / "bench-postgres" / "data", free_port(),
                                  password=secrets.token_urlsafe(32)).start()
        server_url = server.url()
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if server:
            server.stop()
