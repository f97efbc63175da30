"""What the TrustFile extractor declares to the credential registry, checked for real against the sandbox."""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from sandbox import qbo as qbo_sandbox
from sandbox import servicetrade as st_sandbox
from sandbox import trustfile as tf_sandbox

ROOT = Path(__file__).resolve().parents[3]
UTC = dt.timezone.utc
REALM = qbo_sandbox.REALMS[0]
BOOKS, FIRE, PENDING = "c-books", "c-fire", "c-pending"
COMPANY_TOKEN = tf_sandbox.SEEDED_CONNECTIONS[0]      # a company the TrustFile sandbox knows


def servicetrade_connection(sandbox, password=st_sandbox.PASSWORD, **extra) -> str:
    return json.dumps({"conn_type": "servicetrade", "host": f"{sandbox.url}/servicetrade/api",
                       "login": st_sandbox.USERNAME, "password": password, "extra": extra})


@pytest.fixture
def extractor(clean_db, vendor_connections, sandbox, monkeypatch):
    """A QuickBooks company (signed up by us: it has a company token), a ServiceTrade one, and one not yet
    authorized; the ServiceTrade login in its own Airflow connection with the registry's extras."""
    from etl.encryption import encrypt

    conn = clean_db
    monkeypatch.setenv("AIRFLOW_CONN_SERVICETRADE_ACME", servicetrade_connection(
        sandbox, owner="field-ops", expires_at="2027-01-31"))
    conn.execute("TRUNCATE etl.credentials CASCADE")
    qbo = encrypt(json.dumps({"realm_id": REALM, "refresh_token": qbo_sandbox.INITIAL_REFRESH_TOKENS[REALM]}))
    conn.execute("INSERT INTO trustfile.connections (connection_id, host_identifier, host_credentials, "
                 "provisioning_state, company_name, signup_email, company_token) "
                 "VALUES (%s, %s, %s, 'provisioned', 'Acme Books', 'books@example.com', %s)",
                 (BOOKS, REALM, qbo, encrypt(COMPANY_TOKEN)))
    conn.execute("INSERT INTO trustfile.connections (connection_id, host_system, host_identifier, host_credentials) "
                 "VALUES (%s, 'servicetrade', 'acme-fire', %s)",
                 (FIRE, encrypt(json.dumps({"airflow_conn_id": "servicetrade_acme"}))))
    conn.execute("INSERT INTO trustfile.connections (connection_id) VALUES (%s)", (PENDING,))
    conn.commit()
    return conn


def declared(conn) -> dict:
    from integrations.trustfile.credentials import declare

    return {c.credential_id: c for c in declare(conn)}


def test_every_credential_the_extractor_uses_is_declared_with_its_scope_owner_and_dags(extractor):
    from integrations.trustfile.credentials import EXTRACTOR_API, PROVISION_DAGS, SYNC_DAGS

    found = declared(extractor)
    assert set(found) == {"airflow:trustfile_default", "airflow:qbo_default", "airflow:servicetrade_acme",
                          f"trustfile:company_token:{BOOKS}", f"qbo:refresh_token:{REALM}"}
    assert {i: (c.kind, c.scope, c.integration) for i, c in found.items()} == {
        "airflow:trustfile_default": ("airflow_connection", None, "trustfile"),
        "airflow:qbo_default": ("airflow_connection", None, "trustfile"),
        "airflow:servicetrade_acme": ("airflow_connection", FIRE, "trustfile"),
        f"trustfile:company_token:{BOOKS}": ("company_token", BOOKS, "trustfile"),
        f"qbo:refresh_token:{REALM}": ("oauth_refresh_token", BOOKS, "trustfile"),
    }
    st = found["airflow:servicetrade_acme"]
    assert (st.owner, st.expires_at, st.used_by) == ("field-ops", dt.datetime(2027, 1, 31, tzinfo=UTC), SYNC_DAGS)
    assert found["airflow:trustfile_default"].used_by == (*SYNC_DAGS, *PROVISION_DAGS, EXTRACTOR_API)
    assert "Acme Books" in found[f"qbo:refresh_token:{REALM}"].name
    assert found[f"qbo:refresh_token:{REALM}"].once_a_day and found["airflow:qbo_default"].once_a_day
    assert found[f"qbo:refresh_token:{REALM}"].expires_at is None          # never refreshed yet: not known


def test_a_servicetrade_login_shared_by_several_connections_serves_them_all(extractor, sandbox, monkeypatch):
    from etl.encryption import encrypt

    assert "airflow:servicetrade_default" not in declared(extractor)      # named by code, unused, undefined
    monkeypatch.setenv("AIRFLOW_CONN_SERVICETRADE_DEFAULT", servicetrade_connection(sandbox))
    assert declared(extractor)["airflow:servicetrade_default"].used_by == ()    # defined: tracked
    extractor.execute("INSERT INTO trustfile.connections (connection_id, host_system, host_credentials) "
                      "VALUES ('c-fire-2', 'servicetrade', %s)",
                      (encrypt(json.dumps({"airflow_conn_id": "servicetrade_acme"})),))
    extractor.commit()
    shared = declared(extractor)["airflow:servicetrade_acme"]
    assert shared.scope is None and shared.notes == f"serves TrustFile connections {FIRE}, c-fire-2"


def test_every_check_passes_against_the_sandbox_and_quickbooks_is_asked_once_a_day(extractor, sandbox):
    from etl import credentials

    now = dt.datetime.now(UTC)
    found = list(declared(extractor).values())
    credentials.register(extractor, found)
    results = credentials.verify(extractor, found, now)
    assert [(r.credential_id, r.error) for r in results if not r.ok] == []
    qbo_calls = [(r["method"], r["path"]) for r in sandbox.requests("qbo")]
    assert qbo_calls == [("POST", "/qbo/oauth2/v1/tokens/bearer"),                  # qbo_default: a made-up token
                         ("POST", "/qbo/oauth2/v1/tokens/bearer"),                  # the company's first refresh
                         ("POST", f"/qbo/v3/company/{REALM}/query")]                # one COUNT(*)
    assert [(r["method"], r["path"]) for r in sandbox.requests("trustfile")] == [
        ("GET", "/trustfile/v3/connections/credential-check"), ("GET", f"/trustfile/v3/connections/{COMPANY_TOKEN}")]
    assert sandbox.state("servicetrade")["open_sessions"] == 0

    expires = extractor.execute("SELECT expires_at FROM etl.credentials WHERE credential_id = %s",
                                (f"qbo:refresh_token:{REALM}",)).fetchone()[0]
    assert abs(expires - (now + dt.timedelta(seconds=qbo_sandbox.REFRESH_SECONDS))) < dt.timedelta(minutes=1)
    assert declared(extractor)[f"qbo:refresh_token:{REALM}"].expires_at == expires    # read back from the tokens

    credentials.verify(extractor, list(declared(extractor).values()), now + dt.timedelta(minutes=5))
    assert len(sandbox.requests("qbo")) == 3                                         # the same day: not again
    assert len(sandbox.requests("trustfile")) == 4                                   # TrustFile has no such budget


def test_a_new_consent_s_expiry_is_unknown_until_its_first_refresh(extractor, sandbox):
    from etl import credentials
    from etl.encryption import encrypt

    found = list(declared(extractor).values())
    credentials.register(extractor, found)
    credentials.verify(extractor, found, dt.datetime.now(UTC))
    assert declared(extractor)[f"qbo:refresh_token:{REALM}"].expires_at is not None
    extractor.execute("UPDATE trustfile.connections SET host_credentials = %s WHERE connection_id = %s", (encrypt(
        json.dumps({"realm_id": REALM, "refresh_token": "RT1-from-the-customer-s-new-consent"})), BOOKS))
    extractor.commit()
    assert declared(extractor)[f"qbo:refresh_token:{REALM}"].expires_at is None       # not the old consent's


def test_refused_credentials_say_what_to_do_and_no_secret_reaches_the_registry(extractor, sandbox, monkeypatch):
    from etl import credentials
    from etl.encryption import encrypt

    unknown_token = "0b5e0d5c-1f7e-4a7e-9c39-9d1b1e7f2a11"
    revoked = "RT1-revoked-refresh-token-of-acme-books"
    extractor.execute("UPDATE trustfile.connections SET company_token = %s, host_credentials = %s WHERE "
                      "connection_id = %s", (encrypt(unknown_token),
                                             encrypt(json.dumps({"realm_id": REALM, "refresh_token": revoked})), BOOKS))
    extractor.commit()
    monkeypatch.setenv("AIRFLOW_CONN_SERVICETRADE_ACME", servicetrade_connection(sandbox, password="wrong-pass"))
    found = list(declared(extractor).values())
    credentials.register(extractor, found)
    errors = {r.credential_id: r.error for r in credentials.verify(extractor, found, dt.datetime.now(UTC))}

    assert re.search(rf"TrustFile does not know the company token of connection {BOOKS}", errors[
        f"trustfile:company_token:{BOOKS}"])
    assert re.search(rf"the customer authorizes again from TrustFile.*/connections/{BOOKS}/authentication",
                     errors[f"qbo:refresh_token:{REALM}"])
    assert "Invalid username or password" in errors["airflow:servicetrade_acme"]
    assert errors["airflow:trustfile_default"] is None and errors["airflow:qbo_default"] is None
    stored = json.dumps(extractor.execute("SELECT json_agg(c) FROM etl.credentials c").fetchone()[0])
    for secret in (unknown_token, revoked, "wrong-pass", tf_sandbox.TOKEN, qbo_sandbox.CLIENT_SECRET):
        assert secret not in stored and all(secret not in (e or "") for e in errors.values())


def test_a_connection_missing_from_airflow_or_with_a_bad_expiry_fails_its_check_by_name(extractor, sandbox,
                                                                                       monkeypatch):
    from etl import credentials
    from etl.encryption import encrypt

    extractor.execute("UPDATE trustfile.connections SET host_credentials = %s WHERE connection_id = %s",
                      (encrypt(json.dumps({"airflow_conn_id": "servicetrade_missing"})), FIRE))
    extractor.commit()
    monkeypatch.setenv("AIRFLOW_CONN_TRUSTFILE_DEFAULT", json.dumps(
        {"conn_type": "trustfile", "host": f"{sandbox.url}/trustfile", "password": tf_sandbox.TOKEN,
         "extra": {"expires_at": "end of June"}}))
    found = list(declared(extractor).values())
    credentials.register(extractor, found)
    errors = {r.credential_id: r.error for r in credentials.verify(extractor, found, dt.datetime.now(UTC))}
    assert "The conn_id `servicetrade_missing` isn't defined (add it in Admin > Connections" in errors[
        "airflow:servicetrade_missing"]
    assert "extra expires_at 'end of June' of connection 'trustfile_default' is not a date" in errors[
        "airflow:trustfile_default"]


def test_the_dags_declared_as_users_are_the_dags_that_run_the_integration_s_code():
    """The mapping next to the integration stays true to dags/: a new DAG running the sync or the
    provisioning code must be named there, or its credentials would not list it."""
    from integrations.trustfile.credentials import PROVISION_DAGS, SYNC_DAGS

    running: dict[str, set[str]] = {"integrations.trustfile.tasks": set(), "integrations.trustfile.provisioning": set()}
    for path in (ROOT / "dags").glob("*.py"):
        text = path.read_text()
        for dag_id in re.findall(r'dag_id="([a-z0-9_]+)"', text):
            for module, users in running.items():
                if module in text:
                    users.add(dag_id)
    assert running["integrations.trustfile.tasks"] == set(SYNC_DAGS)
    assert running["integrations.trustfile.provisioning"] == set(PROVISION_DAGS)
