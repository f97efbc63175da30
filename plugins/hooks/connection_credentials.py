"""An Airflow connection as a credential of the registry (etl.credentials), for any integration's hook.

A connection may carry two extras for the registry, entered in its form next to the secret they describe:
`owner` and `expires_at` (yyyy-mm-dd, or ISO 8601 with an offset). Its check is the hook's own cheapest
authenticated call; what a check can meet becomes CheckFailed naming what was checked.
"""
from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from functools import partial

import psycopg
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from etl.credentials import CheckFailed, Credential
from etl.encryption import EncryptionError
from hooks.vendor_http import VendorApiError, VendorHttpHook


def airflow_connection(hook_class: type[VendorHttpHook], conn_id: str, name: str, *, integration: str, owner: str,
                       used_by: tuple[str, ...], scope: str | None = None, once_a_day: bool = False,
                       notes: str | None = None,
                       check: Callable[[VendorHttpHook], None] | None = None) -> Credential:
    """The connection's credential, its owner and expiry from its extras; checked by `check(hook)`, by
    default the hook's test_connection."""
    extra = extras(conn_id) or {}
    expires_at, problem = _expiry(extra.get("expires_at"), conn_id)
    return Credential(f"airflow:{conn_id}", integration, "airflow_connection", name, scope=scope,
                      owner=extra.get("owner") or owner, expires_at=expires_at, used_by=used_by, notes=notes,
                      check=partial(_check_connection, hook_class, conn_id, problem, check), once_a_day=once_a_day)


def extras(conn_id: str) -> dict | None:
    """The connection's extras, or None when Airflow has no such connection."""
    try:
        extra = BaseHook.get_connection(conn_id).extra_dejson
    except AirflowNotFoundException:
        return None
    return extra if isinstance(extra, dict) else {}


@contextlib.contextmanager
def refusals(what: str) -> Iterator[None]:
    """What a check can meet becomes CheckFailed naming what was checked; anything else (a bug) still raises."""
    try:
        yield
    except AirflowNotFoundException as exc:
        raise CheckFailed(f"{what}: {exc} (add it in Admin > Connections, or correct the id that names it)") from None
    except (VendorApiError, ValueError, KeyError, TypeError, EncryptionError) as exc:
        raise CheckFailed(f"{what}: {exc}") from None


def _expiry(value: object, conn_id: str) -> tuple[dt.datetime | None, str | None]:
    if value in (None, ""):
        return None, None
    text = str(value).strip()
    try:
        moment = (dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.timezone.utc) if len(text) == 10
                  else dt.datetime.fromisoformat(text))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        return None, (f"extra expires_at {text!r} of connection {conn_id!r} is not a date (yyyy-mm-dd, or ISO 8601 "
                      "with an offset): correct it in the connection form")
    return moment, None


def _check_connection(hook_class: type[VendorHttpHook], conn_id: str, problem: str | None,
                      check: Callable[[VendorHttpHook], None] | None, conn: psycopg.Connection) -> None:
    if problem:
        raise CheckFailed(problem)
    with refusals(f"Airflow connection {conn_id!r}"):
        hook = hook_class(conn_id)
        if check is not None:
            check(hook)
            return
        works, message = hook.test_connection()
    if not works:
        raise CheckFailed(message)
