"""What the TrustFile extractor contributes to the credential registry (etl.credentials): its credentials
and how to check each within its vendor's budget.

Tasks cannot list Airflow's connections, so the ids come from code and our tables: the TrustFile token and
QuickBooks OAuth app connections the code names, the ServiceTrade connection each ServiceTrade company's
host credentials name (and `servicetrade_default`, the provisioning default, once it exists), each company
token from our signups and each consented QuickBooks company's refresh token. A credential's scope is the
TrustFile connection it serves (NULL: all of them), and its users are the DAGs below, declared next to the
code they run (a test keeps them true to dags/).

An Airflow connection may carry two extras for the registry, `owner` and `expires_at`
(hooks.connection_credentials). Secrets stay sealed in the declarations and are decrypted inside a check
only.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import psycopg

from etl.credentials import CheckFailed, Credential
from etl.encryption import decrypt
from etl.oauth_tokens import fingerprint
from hooks.connection_credentials import airflow_connection, extras, refusals
from hooks.qbo import QboHook, RefreshTokenRefused
from hooks.servicetrade import ServiceTradeHook
from hooks.trustfile import TrustFileHook
from hooks.vendor_http import VendorApiError, VendorHttpHook, register_secret
from integrations.trustfile.hosts.qbo import QBO_APP_CONN_ID

INTEGRATION = "trustfile"
OWNER = "integrations"
SYNC_DAGS = ("trustfile_sync", "trustfile_backfill")   # tasks.build_job: every credential of a connection
PROVISION_DAGS = ("trustfile_provision",)               # provisioning: the TrustFile token
EXTRACTOR_API = "extractor API (/extractor)"            # the QuickBooks consent and /health
TOKEN_VENDOR = "qbo"                                    # QboHook's rows in etl.oauth_tokens


@dataclass(frozen=True)
class _Company:
    """A TrustFile connection as the registry needs it: names and fingerprints, its secrets still sealed."""

    connection_id: str
    host_system: str
    company_name: str | None
    sealed_credentials: bytes | None
    sealed_token: bytes | None
    host_conn_id: str | None = None          # ServiceTrade: the Airflow connection of its login
    realm_id: str | None = None              # QuickBooks: the consented company
    consent_fingerprint: str | None = None   # QuickBooks: which refresh token the consent gave

    def of(self) -> str:
        return f"{self.company_name} (connection {self.connection_id})" if self.company_name \
            else f"connection {self.connection_id}"


def declare(conn: psycopg.Connection) -> list[Credential]:
    """Every credential the extractor uses now, read from Airflow's connections and trustfile.connections."""
    companies = _companies(conn)
    return [*_app_connections(), *_host_logins(companies), *_company_tokens(companies),
            *_refresh_tokens(conn, companies)]


def _companies(conn: psycopg.Connection) -> list[_Company]:
    rows = conn.execute("SELECT connection_id, host_system, company_name, host_credentials, company_token "
                        "FROM trustfile.connections ORDER BY connection_id").fetchall()
    conn.commit()
    companies = []
    for connection_id, host_system, company_name, sealed, token in rows:
        host = json.loads(decrypt(sealed)) if sealed is not None else {}
        seed = host.get("refresh_token")
        companies.append(_Company(connection_id, host_system, company_name, sealed, token,
                                  host_conn_id=host.get("airflow_conn_id"), realm_id=host.get("realm_id"),
                                  consent_fingerprint=fingerprint(seed) if seed else None))
    return companies


# ---- Airflow connections ------------------------------------------------------------------------------

def _app_connections() -> Iterator[Credential]:
    yield _airflow(TrustFileHook, TrustFileHook.default_conn_name, "TrustFile Items API token (extractor to Avalara)",
                   used_by=(*SYNC_DAGS, *PROVISION_DAGS, EXTRACTOR_API))
    yield _airflow(QboHook, QBO_APP_CONN_ID, "QuickBooks Online OAuth app (client id and secret)",
                   used_by=(*SYNC_DAGS, EXTRACTOR_API), once_a_day=True,
                   notes="every consented company's refresh goes through it")


def _host_logins(companies: list[_Company]) -> Iterator[Credential]:
    served: dict[str, list[_Company]] = {}
    for company in companies:
        if company.host_system == "servicetrade" and company.host_conn_id:
            served.setdefault(company.host_conn_id, []).append(company)
    default = ServiceTradeHook.default_conn_name
    if default not in served and extras(default) is not None:
        served[default] = []
    for conn_id, users in sorted(served.items()):
        if len(users) == 1:
            yield _airflow(ServiceTradeHook, conn_id, f"ServiceTrade API login of {users[0].of()}",
                           scope=users[0].connection_id, used_by=SYNC_DAGS)
        else:
            notes = (f"serves TrustFile connections {', '.join(sorted(u.connection_id for u in users))}" if users
                     else "no TrustFile connection uses it yet")
            yield _airflow(ServiceTradeHook, conn_id, f"ServiceTrade API login {conn_id}",
                           used_by=SYNC_DAGS if users else (), notes=notes)


def _airflow(hook_class: type[VendorHttpHook], conn_id: str, name: str, **kwargs) -> Credential:
    return airflow_connection(hook_class, conn_id, name, integration=INTEGRATION, owner=OWNER, **kwargs)


# ---- what each company holds ----------------------------------------------------------------------------

def _company_tokens(companies: list[_Company]) -> Iterator[Credential]:
    for company in companies:
        if company.sealed_token is not None:
            yield Credential(f"trustfile:company_token:{company.connection_id}", INTEGRATION, "company_token",
                             f"TrustFile company token of {company.of()}", scope=company.connection_id, owner=OWNER,
                             used_by=SYNC_DAGS, notes="from our signup (trustfile_provision); no documented expiry",
                             check=partial(_check_company_token, company.connection_id, company.sealed_token))


def _check_company_token(connection_id: str, sealed: bytes, conn: psycopg.Connection) -> None:
    """TrustFileHook.get_company: the cheapest call that needs the company token."""
    with refusals(f"the company token of connection {connection_id}"):
        token = decrypt(sealed)
        register_secret(token)                  # it travels in the URL path
        try:
            TrustFileHook().get_company(token)
        except VendorApiError as exc:
            if exc.status in (401, 403):
                raise CheckFailed(f"the company token of connection {connection_id} was not checked: TrustFile "
                                  f"refused our own token (airflow:{TrustFileHook.default_conn_name}): {exc}") from None
            if exc.status == 404:
                raise CheckFailed(f"TrustFile does not know the company token of connection {connection_id} "
                                  "(HTTP 404): ask Avalara what became of the company; do not sign it up again") \
                    from None
            raise


def _refresh_tokens(conn: psycopg.Connection, companies: list[_Company]) -> Iterator[Credential]:
    consented = [c for c in companies if c.host_system == "qbo" and c.realm_id and c.consent_fingerprint]
    stored = {scope: (seed, expires) for scope, seed, expires in conn.execute(
        "SELECT scope, seed_fingerprint, refresh_expires_at FROM etl.oauth_tokens WHERE vendor = %s "
        "AND scope = ANY(%s)", (TOKEN_VENDOR, [c.realm_id for c in consented]))}
    conn.commit()
    for company in consented:
        seed, expires_at = stored.get(company.realm_id, (None, None))
        yield Credential(
            f"qbo:refresh_token:{company.realm_id}", INTEGRATION, "oauth_refresh_token",
            f"QuickBooks refresh token of {company.of()}, realm {company.realm_id}", scope=company.connection_id,
            owner=OWNER, used_by=SYNC_DAGS, once_a_day=True,
            # The stored expiry is this consent's only if the stored token descends from it.
            expires_at=expires_at if seed == company.consent_fingerprint else None,
            notes="rotates on every refresh; expires at Intuit's cap, after which the customer must authorize again",
            check=partial(_check_refresh_token, company.connection_id, company.realm_id, company.sealed_credentials))


def _check_refresh_token(connection_id: str, realm_id: str, sealed: bytes, conn: psycopg.Connection) -> dt.datetime:
    """One COUNT(*) query through the shared token row (refreshing only when the access token is old);
    returns the expiry Intuit gave with the last refresh (x_refresh_token_expires_in)."""
    with refusals(f"QuickBooks company {realm_id} (connection {connection_id})"):
        seed = json.loads(decrypt(sealed))["refresh_token"]
        try:
            QboHook(QBO_APP_CONN_ID, realm_id=realm_id, refresh_token=seed).check_credentials()
        except RefreshTokenRefused:
            raise CheckFailed(f"QuickBooks refuses the refresh token of company {realm_id} (connection "
                              f"{connection_id}): the customer authorizes again from TrustFile, which opens the "
                              f"consent link GET /extractor/connections/{connection_id}/authentication") from None
    row = conn.execute("SELECT refresh_expires_at FROM etl.oauth_tokens WHERE vendor = %s AND scope = %s",
                       (TOKEN_VENDOR, realm_id)).fetchone()
    conn.commit()
    return row[0] if row else None
