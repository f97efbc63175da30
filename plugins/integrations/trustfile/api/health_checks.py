"""The checks behind `GET /health`: the connector, the host system and TrustFile, each OK, DEGRADED or FAIL.

/health is unauthenticated and polled, so it must answer fast, never raise, never quote a secret or
an identifier, and not let its callers drive traffic to the vendors:
- every check runs in a worker thread and the answer waits TIMEOUT_SECONDS at most (a check still
  running then is FAIL "no answer"); one that succeeds slower than SLOW_SECONDS is DEGRADED;
- the vendor checks (hostSystem, trustfile) are answered from a cache for CACHE_SECONDS, so any
  polling rate costs each vendor at most one call per API-server process in that time;
- a company's QuickBooks calls count against the per-company quota its sync needs: a successful sync
  within RECENT_SYNC answers for QuickBooks, and otherwise one company is probed at most once per
  PROBE_SECONDS (a probe may also refresh, and so rotate, its token); a probe that failed is tried again
  after FAILED_PROBE_SECONDS; one probe runs at a time, and the polls meanwhile get the last answer;
- a probe waits TOKEN_LOCK_SECONDS at most for the company's token row: a refresh by a worker holds it
  (up to QboHook.refresh_budget_seconds) and is answered DEGRADED, so probes never queue behind it and
  never fill the pool the other checks run in;
- a vendor throttling us (429) answers, so it is DEGRADED, never FAIL;
- the hooks get short timeouts and one attempt; the details of a failure go to our log only.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

from airflow.sdk.exceptions import AirflowNotFoundException

from etl import db, oauth_tokens
from etl.encryption import EncryptionError
from hooks.vendor_http import VendorApiError, VendorHttpHook
from integrations.trustfile import connections as store
from integrations.trustfile import reports, status

log = logging.getLogger(__name__)

OK, DEGRADED, FAIL = "OK", "DEGRADED", "FAIL"
TIMEOUT_SECONDS = 4.0
SLOW_SECONDS = 2.0
CACHE_SECONDS = 30.0
PROBE_SECONDS = 900.0
FAILED_PROBE_SECONDS = 120.0
TOKEN_LOCK_SECONDS = 1.0
RECENT_SYNC = dt.timedelta(hours=2)      # trustfile_sync runs hourly: two chances
ERROR_WINDOW = dt.timedelta(hours=1)

Check = Callable[[], tuple[str, str]]
T = TypeVar("T")


class ProbeRunning(Exception):
    """Another caller's probe is still running, and there is no earlier outcome to give meanwhile."""


class AtMostEvery:
    """Runs one probe at a time, for the same key at most once per PROBE_SECONDS after an answer and once
    per FAILED_PROBE_SECONDS after a failure; in between, its last outcome (an answer, or the same error
    raised again) stands. While a probe runs, other callers get the key's last outcome, however old, or
    ProbeRunning: a probe that hangs holds one thread, never one per poll."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._last: tuple[float, Hashable, object, BaseException | None] | None = None
        self._running = False
        self._lock = threading.Lock()

    def __call__(self, key: Hashable, probe: Callable[[], T]) -> T:
        with self._lock:
            last = self._last if self._last is not None and self._last[1] == key else None
            if last is None or not _still_stands(last):
                if not self._running:
                    self._running = True
                    last = None
                elif last is None:
                    raise ProbeRunning(f"a {self.name} probe is still running")
        if last is not None:
            if last[3] is not None:
                raise last[3]
            return last[2]
        outcome: tuple[object, BaseException | None] | None = None
        try:
            answer = probe()
            outcome = (answer, None)
            return answer
        except Exception as exc:
            outcome = (None, exc)
            raise
        finally:
            with self._lock:
                self._running = False
                if outcome is not None:
                    self._last = (time.monotonic(), key, *outcome)


def _still_stands(outcome: tuple[float, Hashable, object, BaseException | None]) -> bool:
    at, _, _, error = outcome
    return time.monotonic() - at < (PROBE_SECONDS if error is None else FAILED_PROBE_SECONDS)


class HealthChecks:
    """Runs the checks in parallel under one deadline; remembers the `cached` ones for CACHE_SECONDS."""

    def __init__(self, checks: dict[str, Check], cached: set[str]):
        self.checks, self.cached = checks, cached
        self._pool = ThreadPoolExecutor(max_workers=2 * len(checks), thread_name_prefix="extractor-health")
        self._memory: dict[str, tuple[float, dict]] = {}
        self._lock = threading.Lock()

    def statuses(self) -> list[dict]:
        now = time.monotonic()
        with self._lock:
            remembered = {kind: status for kind, (at, status) in self._memory.items() if now - at < CACHE_SECONDS}
        running = {kind: self._pool.submit(_timed, check) for kind, check in self.checks.items()
                   if kind not in remembered}
        deadline = now + TIMEOUT_SECONDS
        answers = []
        for kind in self.checks:
            if kind in remembered:
                answers.append(remembered[kind])
                continue
            status, description = _outcome(kind, running[kind], deadline)
            answer = {"type": kind, "status": status, "description": description}
            if kind in self.cached:
                with self._lock:
                    self._memory[kind] = (time.monotonic(), answer)
            answers.append(answer)
        return answers


def _timed(check: Check) -> tuple[str, str, float]:
    started = time.monotonic()
    status, description = check()
    return status, description, time.monotonic() - started


def _outcome(kind: str, future, deadline: float) -> tuple[str, str]:
    try:
        status, description, seconds = future.result(timeout=max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        log.warning("health: the %s check gave no answer within %g s", kind, TIMEOUT_SECONDS)
        return FAIL, f"no answer within {TIMEOUT_SECONDS:g} s"
    except Exception as exc:  # noqa: BLE001 - a health check reports, it does not fail
        log.warning("health: the %s check failed: %s", kind, exc)
        if isinstance(exc, VendorApiError) and exc.status == 429:    # it answers, and limits us
            return DEGRADED, reason(exc)
        if isinstance(exc, oauth_tokens.RefreshInProgress):         # a worker is at it; the probe did not wait
            return DEGRADED, "a token refresh is in progress"
        if isinstance(exc, ProbeRunning):
            return DEGRADED, str(exc)
        return FAIL, reason(exc)
    if status == OK and seconds > SLOW_SECONDS:
        return DEGRADED, f"slow: answered in {seconds:.1f} s"
    return status, description


def reason(exc: BaseException) -> str:
    """A failure in a few words that hold no secret and no identifier (the log has the rest)."""
    if isinstance(exc, VendorApiError):
        if exc.status is None:
            return "no answer"
        if exc.status in (401, 403):
            return f"credentials refused (HTTP {exc.status})"
        if exc.status == 429:
            return "throttled (HTTP 429)"
        if exc.status >= 500:
            return f"server error (HTTP {exc.status})"
        return f"request refused (HTTP {exc.status})"
    if isinstance(exc, AirflowNotFoundException):
        return "connection not defined"
    if isinstance(exc, EncryptionError):
        return "stored credentials cannot be decrypted (INTEGRATIONS_FERNET_KEY)"
    if isinstance(exc, ValueError):
        return "connection incomplete"
    return type(exc).__name__


def quick(hook: VendorHttpHook) -> VendorHttpHook:
    """The hook with timeouts that fit in TIMEOUT_SECONDS and no retries."""
    hook.connect_timeout, hook.read_timeout, hook.max_attempts = 2.0, 3.0, 1
    return hook


def connector(conninfo: str | None) -> tuple[str, str]:
    """Our database answers; errors the sync recorded within the last hour make it DEGRADED."""
    with db.connect(conninfo) as conn:
        conn.execute("SELECT 1 FROM trustfile.connector")
        recent = reports.recent_error_counts(conn, ERROR_WINDOW)
    if recent:
        counts = ", ".join(f"{recent[kind]} {kind}" for kind in reports.ERROR_TYPES if kind in recent)
        return DEGRADED, f"errors in the last hour: {counts} (GET /errors)"
    return OK, "NOMINAL"


def trustfile(hook_factory: Callable[[], VendorHttpHook]) -> tuple[str, str]:
    """Our extractor_to_avalara token against the Items API (TrustFileHook.check_credentials)."""
    quick(hook_factory()).check_credentials()
    return OK, "NOMINAL"


def host_system(conninfo: str | None, qbo_hook_factory: Callable[..., VendorHttpHook],
                probe: AtMostEvery) -> tuple[str, str]:
    """The QuickBooks OAuth client is configured (without it no consent and no sync can work); a company
    whose consent QuickBooks stopped accepting is DEGRADED (one company's problem). Then a sync that
    succeeded within RECENT_SYNC proves QuickBooks answers; without one, a COUNT query for the most
    recently authorized company (the cheapest call that proves QuickBooks and the consent), at most
    once per PROBE_SECONDS. The company's tokens are in our database (`conninfo`), not Airflow's."""
    client = qbo_hook_factory()
    if not (client.connection.login or "").strip() or not client.password:
        return FAIL, "OAuth client not configured (client id and secret)"
    with db.connect(conninfo) as conn:
        lost = status.consent_lost(conn, "qbo")
        synced = status.synced_within(conn, "qbo", RECENT_SYNC)
        company = store.latest_authorized(conn, "qbo")
        credentials = store.host_credentials(conn, company) if company and not synced else None
    if lost:
        log.warning("health: QuickBooks no longer accepts the consent of connection(s) %s: each must authorize "
                    "again (GET /connections/{id}/authentication)", ", ".join(lost))
        return DEGRADED, "a company's consent no longer works: it must authorize again (the extractor log names it)"
    if company is None:
        return OK, "OAuth client configured; no enabled company authorized yet"
    if credentials is None:
        return OK, "NOMINAL"
    return probe((company, credentials["refresh_token"]), lambda: _probe_company(conninfo, qbo_hook_factory,
                                                                                 company, credentials))


def _probe_company(conninfo: str | None, qbo_hook_factory: Callable[..., VendorHttpHook], company: str,
                   credentials: dict) -> tuple[str, str]:
    hook = quick(qbo_hook_factory(realm_id=credentials["realm_id"], refresh_token=credentials["refresh_token"],
                                  conninfo=conninfo))
    hook.token_lock_timeout = TOKEN_LOCK_SECONDS    # a refresh holding the token row: RefreshInProgress
    try:
        hook.check_credentials()
    except VendorApiError as exc:
        if exc.status is None or exc.status == 429 or exc.status >= 500:
            raise
        log.warning("health: QuickBooks refused the consent of connection %s: %s", company, exc)
        return DEGRADED, f"a company's consent no longer works (HTTP {exc.status}); the extractor log names it"
    return OK, "NOMINAL"


def standard(conninfo: str | None, qbo_hook_factory: Callable[..., VendorHttpHook],
             trustfile_hook_factory: Callable[[], VendorHttpHook], *,
             overrides: dict[str, Check] | None = None) -> HealthChecks:
    """The contract's three checks; the vendor ones cached, the company probe rarer still."""
    probe = AtMostEvery("QuickBooks")
    return HealthChecks({"connector": lambda: connector(conninfo),
                         "hostSystem": lambda: host_system(conninfo, qbo_hook_factory, probe),
                         "trustfile": lambda: trustfile(trustfile_hook_factory), **(overrides or {})},
                        cached={"hostSystem", "trustfile"})
