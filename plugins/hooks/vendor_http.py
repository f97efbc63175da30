"""The HTTP client every vendor hook is built on: sessions, retries, paging, errors, secrets.

A vendor hook subclasses `VendorHttpHook`, names its vendor and connection type, says which
connection values are secrets and how to authenticate, and inherits the rest:

- a `requests.Session` built on first use (hooks are constructed while DAG files are parsed);
- connect/read timeouts on every call;
- retries with exponential backoff and jitter (tenacity) on connection errors, timeouts and 5xx,
  `Retry-After` honoured on 429, and no retry for any other 4xx: it will never succeed;
- one error type, `VendorApiError`, naming vendor, method, the URL path with secrets removed,
  status and a short body excerpt;
- every secret registered with Airflow's masker before the first request, and redacted from
  urllib3's debug log lines, which print request paths with their query strings.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from functools import cached_property
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
import urllib3
from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

log = logging.getLogger(__name__)

EXCERPT_CHARS = 300
SECRET_QUERY_KEYS = {"token", "access_token", "apikey", "api_key", "user_key", "key", "password", "client_secret",
                     "refresh_token", "code", "signature"}


class _Redactor(logging.Filter):
    """Replaces registered secrets in log records of the HTTP stack (urllib3 logs paths with queries)."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        if secret and len(secret) >= 4:
            with self._lock:
                self._secrets.add(secret)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            record.msg = self.redact(record.getMessage())
            record.args = None
        return True


REDACTOR = _Redactor()
for _name in ("urllib3.connectionpool", "urllib3.util.retry", "requests"):
    logging.getLogger(_name).addFilter(REDACTOR)


def register_secret(secret: str | None) -> None:
    """Mask `secret` in Airflow's logs and in the HTTP stack's own debug lines."""
    if secret:
        mask_secret(secret)
        REDACTOR.add(secret)


def sanitize_url(url: str) -> str:
    """The URL with secret-looking query values and every registered secret replaced by ***."""
    parts = urlsplit(url)
    query = urlencode([(k, "***" if k.lower() in SECRET_QUERY_KEYS else v) for k, v in parse_qsl(parts.query)],
                      safe="*")
    return REDACTOR.redact(urlunsplit(parts._replace(query=query, netloc=parts.netloc.rsplit("@", 1)[-1])))


class VendorApiError(RuntimeError):
    """A vendor call failed. The text is safe to log: no secret, a short body excerpt.

    vendor, method, path (secrets removed), status (None: no answer), detail (the excerpt), hint (what
    it means, what to do); malformed: a 2xx whose body did not parse; retry_after: the seconds the
    vendor asked us to wait; body: the error body when it was JSON, for hooks that read structured
    errors (kept off the message: it is not redacted); unsent: the request provably never reached the
    vendor (no connection was made), so a call that creates something did not create it.
    """

    def __init__(self, vendor: str, method: str, url: str, status: int | None, detail: str, *, hint: str = "",
                 malformed: bool = False, retry_after: float | None = None, body: Any = None, unsent: bool = False):
        self.vendor = vendor
        self.malformed = malformed
        self.unsent = unsent
        self.method = method
        self.path = sanitize_url(url)
        self.status = status
        self.detail = REDACTOR.redact(" ".join(detail.split()))[:EXCERPT_CHARS]
        self.hint = hint
        self.retry_after = retry_after
        self.body = body
        status_text = f"HTTP {status}" if status is not None else "no response"
        super().__init__(
            f"{vendor} {method} {self.path} failed: {status_text}: {self.detail}" + (f" — {hint}" if hint else "")
        )

    @property
    def transient(self) -> bool:
        """Worth retrying: no answer, throttled, a server error, or a body cut short in transit."""
        return self.malformed or self.status is None or self.status == 429 or self.status >= 500


def _never_connected(exc: BaseException) -> bool:
    """No connection was made (a connect timeout, a refused or unresolvable host): nothing was sent."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, urllib3.exceptions.NewConnectionError)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, VendorApiError) and exc.transient


def _safe_to_repeat(exc: BaseException) -> bool:
    """For calls that create something: only an explicit refusal (429) proves nothing happened."""
    return isinstance(exc, VendorApiError) and exc.status == 429


IDEMPOTENT_METHODS = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}


class VendorHttpHook(BaseHook):
    """Base for vendor hooks. Subclasses set the class attributes and override `authenticate()`."""

    vendor: ClassVar[str] = "vendor"
    conn_name_attr: ClassVar[str] = "conn_id"
    default_conn_name: ClassVar[str] = ""
    conn_type: ClassVar[str] = ""
    hook_name: ClassVar[str] = ""

    connect_timeout: ClassVar[float] = 10.0
    read_timeout: ClassVar[float] = 60.0
    max_attempts: ClassVar[int] = 5
    backoff_initial: ClassVar[float] = 1.0
    backoff_max: ClassVar[float] = 60.0
    retry_after_max: ClassVar[float] = 300.0

    def __init__(self, conn_id: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.conn_id = conn_id or self.default_conn_name  # nothing else: no I/O at construction

    # ---- connection and secrets -------------------------------------------------------------

    @cached_property
    def connection(self):
        conn = self.get_connection(self.conn_id)
        for secret in self.secrets_of(conn):
            register_secret(secret)
        return conn

    def secrets_of(self, conn) -> Iterable[str | None]:
        """Every secret value of the connection; subclasses add the extra fields that hold secrets."""
        return [conn.password]

    @property
    def password(self) -> str:
        """The connection's password without the stray whitespace a paste leaves behind."""
        return (self.connection.password or "").strip()

    @property
    def base_url(self) -> str:
        host = (self.connection.host or "").rstrip("/")
        if not host:
            raise ValueError(f"connection {self.conn_id!r} has no host: set it to the {self.vendor} API base URL")
        return host if "://" in host else f"https://{host}"

    @cached_property
    def session(self) -> requests.Session:
        session = requests.Session()
        session.headers.update({"Accept": "application/json", "User-Agent": "integrations-platform"})
        self.authenticate(session)
        return session

    def authenticate(self, session: requests.Session) -> None:
        """Put credentials on the session (headers, cookies); called once, on first use."""

    # ---- calls ------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        return path if "://" in path else f"{self.base_url}/{path.lstrip('/')}"

    def request_json(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> Any:
        """`request()` and parse the JSON body; a body that does not parse is retried like a 5xx."""
        return self.request(method, path, idempotent=idempotent, _parse_json=True, **kwargs)

    def request(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> requests.Response:
        """Send one request with the retry policy; return the response or raise VendorApiError.

        `idempotent` (default: true for GET, HEAD, PUT, DELETE) says whether repeating the call is
        harmless. A call that creates something (a POST unless its caller says it is an upsert or a
        read) is repeated only after a 429, which proves the vendor did not act on it.
        """
        if idempotent is None:
            idempotent = method.upper() in IDEMPOTENT_METHODS
        retrying = Retrying(
            retry=retry_if_exception(_is_transient if idempotent else _safe_to_repeat),
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            before_sleep=self._log_retry,
            reraise=True,
        )
        return retrying(self._send, method, self.url(path), **kwargs)

    def _send(self, method: str, url: str, _parse_json: bool = False, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", (self.connect_timeout, self.read_timeout))
        started = time.monotonic()
        try:
            response = self.session.request(method, url, **kwargs)
            _ = response.content  # read the whole body here, so a connection dropped mid-body counts as no answer
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:
            raise VendorApiError(self.vendor, method, url, None, type(exc).__name__,
                                 hint="the vendor did not answer in full; retried with backoff if safe",
                                 unsent=_never_connected(exc)) from None
        except (requests.RequestException, ValueError) as exc:
            # e.g. InvalidHeader, whose text quotes the header value (a token): only the type is kept.
            raise VendorApiError(self.vendor, method, url, None, type(exc).__name__,
                                 hint=f"the request could not be built; check connection {self.conn_id!r} "
                                      "(a stray space or newline in a credential?)") from None
        log.debug("%s %s %s -> %s in %.2fs", self.vendor, method, sanitize_url(url), response.status_code,
                  time.monotonic() - started)
        if response.status_code >= 400:
            raise self.error_for(method, url, response)
        if not _parse_json:
            return response
        return self.json_of(method, url, response)

    def json_of(self, method: str, url: str, response: requests.Response) -> Any:
        """The parsed body; one that does not parse is a `malformed` VendorApiError (retried like a 5xx)."""
        try:
            return response.json()
        except ValueError:
            # Never quote the body: a cut-off answer can hold a token not yet registered as secret.
            content_type = response.headers.get("Content-Type", "no content type")
            raise VendorApiError(self.vendor, method, url, response.status_code,
                                 f"the body is not valid JSON ({len(response.content)} bytes of {content_type})",
                                 hint="truncated or malformed answer; nothing was loaded from it",
                                 malformed=True) from None

    def error_for(self, method: str, url: str, response: requests.Response) -> VendorApiError:
        """Turn an error response into VendorApiError; vendors override to parse their error bodies."""
        return VendorApiError(self.vendor, method, url, response.status_code, response.text or response.reason,
                              hint=self.hint_for(response.status_code), retry_after=_retry_after(response),
                              body=_json_body(response))

    def hint_for(self, status: int) -> str:
        if status in (401, 403):
            return f"check the credentials of connection {self.conn_id!r}"
        if status == 404:
            return "the record or endpoint does not exist; check ids and the connection's host"
        if status == 429:
            return "rate limited; retried with backoff (or after the vendor's Retry-After)"
        if status >= 500:
            return "vendor-side error; retried with backoff"
        return "the request was refused as invalid and is not retried"

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, VendorApiError) and exc.retry_after is not None:
            return min(exc.retry_after, self.retry_after_max)
        return wait_exponential_jitter(initial=self.backoff_initial, max=self.backoff_max)(state)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception()
        log.warning("%s (attempt %d of %d); retrying in %.1fs", exc, state.attempt_number, self.max_attempts,
                    state.next_action.sleep if state.next_action else 0)

    # ---- Airflow UI -------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Make the cheapest authenticated call; (False, readable reason) on failure."""
        try:
            self.check_credentials()
        except VendorApiError as exc:
            return False, str(exc)
        except (ValueError, KeyError) as exc:
            return False, f"{self.vendor} connection {self.conn_id!r} is incomplete: {exc}"
        return True, f"{self.vendor}: connection {self.conn_id!r} works"

    def check_credentials(self) -> None:
        raise NotImplementedError


def _json_body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    if re.fullmatch(r"\d+(\.\d+)?", value.strip()):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())
