"""The QuickBooks consent, hop by hop over real HTTP: TrustFile → our API → the sandbox's consent page →
our callback → TrustFile's redirectUri; then the sync's QboHook works from what the callback stored."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets as random_values
import socket
import threading
import time
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit, urlunsplit

import psycopg
import pytest
import requests
from airflow.api_fastapi.common.http_access_log import _redact_query_string
from cryptography.fernet import Fernet

from etl import encryption
from hooks.qbo import DEFAULT_AUTHORIZE_URL, QboHook
from hooks.vendor_http import VendorApiError
from integrations.trustfile import connections as store
from integrations.trustfile.api import consent_state as consent
from sandbox import qbo as qbo_sandbox

TF_TOKEN = "tf-to-extractor-test-token"
# The contract's own example: no scheme, and TrustFile's token in the query.
TF_REDIRECT = f"app.trustfile.avalara.com/connectors/success?id={TF_TOKEN}"
TF_SUCCESS = f"https://app.trustfile.avalara.com/connectors/success?id={TF_TOKEN}"
REALM, OTHER_REALM = qbo_sandbox.REALMS[0], qbo_sandbox.REALMS[1]


@pytest.fixture
def api(serve, vendor_connections, auth):
    base = serve()
    for connection_id in ("c1", "c2"):
        requests.post(f"{base}/connections", json={"connectionId": connection_id}, headers=auth, timeout=10)
    return base


def start(api: str, auth: dict, connection_id: str = "c1", redirect: str = TF_REDIRECT) -> requests.Response:
    return requests.get(f"{api}/connections/{connection_id}/authentication", params={"redirectUri": redirect},
                        headers=auth, allow_redirects=False, timeout=10)


def consent_page(api: str, auth: dict, connection_id: str = "c1") -> str:
    """Our 302 to Intuit, then Intuit's 302 back: the callback URL the browser is sent to."""
    to_intuit = start(api, auth, connection_id)
    assert to_intuit.status_code == 302
    back = requests.get(to_intuit.headers["location"], allow_redirects=False, timeout=10)
    assert back.status_code == 302
    return back.headers["location"]


def finish(callback_url: str) -> str:
    """The browser reaches our callback (no bearer token); where we send it next."""
    response = requests.get(callback_url, allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    assert response.headers["cache-control"] == "no-store"
    return response.headers["location"]


def connection(api: str, auth: dict, connection_id: str = "c1") -> dict:
    return requests.get(f"{api}/connections/{connection_id}", headers=auth, timeout=10).json()


def actions(api: str, auth: dict, connection_id: str = "c1") -> list[str]:
    answer = requests.get(f"{api}/connections/{connection_id}/activities", headers=auth, timeout=10).json()
    return [a["action"] for a in answer["activities"]]


def test_consent_round_trip_authorizes_the_connection_and_the_sync_can_read(api, auth, sandbox, conn, caplog):
    caplog.set_level(logging.DEBUG)
    to_intuit = start(api, auth)
    assert to_intuit.status_code == 302 and to_intuit.headers["cache-control"] == "no-store"
    page = urlsplit(to_intuit.headers["location"])
    assert f"{page.scheme}://{page.netloc}{page.path}" == f"{sandbox.url}/qbo/connect/oauth2"
    asked = {k: v[0] for k, v in parse_qs(page.query).items()}
    assert {k: v for k, v in asked.items() if k != "state"} == {
        "client_id": qbo_sandbox.CLIENT_ID, "response_type": "code", "scope": "com.intuit.quickbooks.accounting",
        "redirect_uri": f"{api}/oauth/qbo/callback"}
    sealed = base64.urlsafe_b64decode(asked["state"])                     # sealed, not merely encoded
    assert TF_TOKEN.encode() not in sealed and b"connection_id" not in sealed

    back = requests.get(to_intuit.headers["location"], allow_redirects=False, timeout=10).headers["location"]
    answer = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
    assert back.startswith(f"{api}/oauth/qbo/callback?") and answer["realmId"] == REALM
    assert answer["state"] == asked["state"]

    assert finish(back) == f"{TF_SUCCESS}&success=true"
    assert sandbox.state("qbo")["consents"] == 1
    described = connection(api, auth)
    assert described["authorized"] is True and described["hostSystemIdentifier"] == f"qbo {REALM}"
    assert described["statusMessage"] == f"authorized QuickBooks company {REALM}"
    assert actions(api, auth)[0] == f"Authorized QuickBooks company {REALM}"

    stored = store.host_credentials(conn, "c1")
    assert stored["realm_id"] == REALM and stored["refresh_token"].startswith("RT1-")
    raw = conn.execute("SELECT host_credentials FROM trustfile.connections WHERE connection_id = 'c1'").fetchone()[0]
    assert stored["refresh_token"].encode() not in bytes(raw)

    rows = list(QboHook(realm_id=stored["realm_id"], refresh_token=stored["refresh_token"]).query("Payment"))
    assert len(rows) == sandbox.state("qbo")["records"][REALM]["Payment"]

    secrets = [answer["code"], stored["refresh_token"], qbo_sandbox.CLIENT_SECRET, TF_TOKEN]
    assert not [s for s in secrets for record in caplog.records if s in record.getMessage()]
    # The API server's access log (Airflow's middleware) redacts what we registered, in any query string.
    logged = _redact_query_string(urlsplit(back).query + "&" + urlsplit(start(api, auth).request.url).query)
    assert not [s for s in secrets if s in logged]


def test_denied_consent_leaves_the_connection_unauthorized_and_says_so(api, auth, sandbox):
    sandbox.control("qbo", consent_denied=True)
    back = consent_page(api, auth)
    assert parse_qs(urlsplit(back).query)["error"] == ["access_denied"]
    assert finish(back) == f"{TF_SUCCESS}&error=access_denied"
    described = connection(api, auth)
    assert described["authorized"] is False and described["hostSystemIdentifier"] is None
    assert described["statusMessage"] == "QuickBooks authorization denied; authorize again from TrustFile"
    assert actions(api, auth)[0] == "QuickBooks authorization denied"


def test_a_denied_reconsent_keeps_the_working_authorization(api, auth, sandbox, conn):
    finish(consent_page(api, auth))
    before = store.host_credentials(conn, "c1")
    sandbox.control("qbo", consent_denied=True)
    assert finish(consent_page(api, auth)).endswith("error=access_denied")
    assert connection(api, auth)["authorized"] is True and store.host_credentials(conn, "c1") == before


def test_an_expired_code_is_refused_and_nothing_is_stored(api, auth, sandbox):
    back = consent_page(api, auth)
    sandbox.control("qbo", advance_clock_seconds=601)   # codes live 10 minutes
    assert finish(back) == f"{TF_SUCCESS}&error=invalid_grant"
    described = connection(api, auth)
    assert described["authorized"] is False
    assert actions(api, auth)[0] == "QuickBooks authorization failed: Intuit refused the code (invalid_grant)"


def test_an_exchange_that_fails_at_intuit_is_not_repeated_and_says_so(api, auth, sandbox):
    back = consent_page(api, auth)
    sandbox.faults("qbo", burst_5xx=3, only_path="/tokens/bearer")
    assert finish(back) == f"{TF_SUCCESS}&error=server_error"
    assert len([r for r in sandbox.requests("qbo") if r["path"].endswith("/tokens/bearer")]) == 1
    assert connection(api, auth)["authorized"] is False
    assert actions(api, auth)[0] == ("QuickBooks authorization failed: the code exchange with Intuit failed "
                                     "(server error (HTTP 503))")


USED = {"message": "This authorization link was already used: start the authorization again from TrustFile."}


def callback(url: str, **replace: str) -> requests.Response:
    """The browser at our callback, with some of Intuit's parameters replaced."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()} | replace
    return requests.get(url.split("?")[0], params=query, allow_redirects=False, timeout=10)


def exchanges(sandbox) -> int:
    return len([r for r in sandbox.requests("qbo") if r["path"].endswith("/tokens/bearer")])


def test_a_replayed_callback_gets_nowhere_and_spends_no_code(api, auth, conn, sandbox):
    back = consent_page(api, auth)
    assert finish(back).endswith("success=true")
    first = store.host_credentials(conn, "c1")
    replay = callback(back)
    assert (replay.status_code, replay.json()) == (400, USED) and "location" not in replay.headers
    assert exchanges(sandbox) == 1
    assert store.host_credentials(conn, "c1") == first and connection(api, auth)["authorized"] is True


def test_a_replayed_state_with_a_fresh_code_for_another_company_relinks_nothing(api, auth, sandbox, conn):
    used = consent_page(api, auth, "c1")
    assert finish(used).endswith("success=true")
    sandbox.control("qbo", consent_realm=OTHER_REALM)
    fresh = parse_qs(urlsplit(consent_page(api, auth, "c2")).query)     # a code for another company
    replay = callback(used, code=fresh["code"][0], realmId=OTHER_REALM)
    assert (replay.status_code, replay.json()) == (400, USED)
    assert connection(api, auth, "c1")["hostSystemIdentifier"] == f"qbo {REALM}"
    assert store.host_credentials(conn, "c1")["realm_id"] == REALM
    assert actions(api, auth, "c1")[0] == f"Authorized QuickBooks company {REALM}"


def test_a_refused_consent_uses_up_its_state_too(api, auth, sandbox, conn):
    sandbox.control("qbo", consent_denied=True)
    denied = consent_page(api, auth)
    assert finish(denied).endswith("error=access_denied")
    sandbox.control("qbo", consent_denied=False)
    fresh = parse_qs(urlsplit(consent_page(api, auth, "c2")).query)
    replay = callback(denied, code=fresh["code"][0], realmId=REALM, error="")
    assert (replay.status_code, replay.json()) == (400, USED)
    assert connection(api, auth)["authorized"] is False


def test_parallel_callbacks_with_one_state_link_the_connection_once(api, auth, sandbox):
    from concurrent.futures import ThreadPoolExecutor

    state_of_c1 = consent_page(api, auth, "c1")
    codes = [parse_qs(urlsplit(state_of_c1).query)["code"][0]]
    for n in range(4):
        sandbox.control("qbo", consent_realm=qbo_sandbox.REALMS[n % 3])
        codes.append(parse_qs(urlsplit(consent_page(api, auth, "c2")).query)["code"][0])
    realms = [REALM] + [qbo_sandbox.REALMS[n % 3] for n in range(4)]
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda pair: callback(state_of_c1, code=pair[0], realmId=pair[1]),
                                zip(codes, realms, strict=True)))
    linked = [a for a in answers if a.status_code == 302 and a.headers["location"].endswith("success=true")]
    assert len(linked) == 1, [(a.status_code, a.headers.get("location"), a.text) for a in answers]
    assert all((a.status_code, a.json()) == (400, USED) for a in answers if a not in linked)
    assert [a for a in actions(api, auth, "c1") if a.startswith("Authorized")] == [
        f"Authorized QuickBooks company {connection(api, auth)['hostSystemIdentifier'].split()[1]}"]


def test_a_state_dies_with_its_connection(api, auth, sandbox):
    back = consent_page(api, auth, "c1")
    assert requests.delete(f"{api}/connections/c1", headers=auth, timeout=10).status_code in (200, 204)
    requests.post(f"{api}/connections", json={"connectionId": "c1"}, headers=auth, timeout=10)
    stale = callback(back)
    assert (stale.status_code, stale.json()) == (400, {"message": "This authorization link is invalid or has "
                                                                  "expired: start the authorization again from "
                                                                  "TrustFile."})
    assert connection(api, auth, "c1")["authorized"] is False and exchanges(sandbox) == 0


def test_a_code_for_one_company_with_another_realm_id_in_the_redirect_is_refused(api, auth, sandbox, conn):
    third = qbo_sandbox.REALMS[2]
    sandbox.control("qbo", consent_realm=third)            # the admin picked the third company at Intuit ...
    back = consent_page(api, auth, "c1")
    answer = callback(back, realmId=OTHER_REALM)            # ... and the redirect names another one
    assert answer.status_code == 302 and answer.headers["location"] == f"{TF_SUCCESS}&error=company_mismatch"
    described = connection(api, auth, "c1")
    assert described["authorized"] is False and described["hostSystemIdentifier"] is None
    assert described["statusMessage"] == ("QuickBooks authorization failed: the consent is not for the company "
                                          "Intuit's redirect named; authorize again from TrustFile")
    sandbox.control("qbo", consent_realm=OTHER_REALM)      # that company's real owner is not blocked
    assert finish(consent_page(api, auth, "c2")).endswith("success=true")
    assert connection(api, auth, "c2")["hostSystemIdentifier"] == f"qbo {OTHER_REALM}"


def test_a_second_consent_replaces_the_refresh_token_the_sync_uses(api, auth, sandbox, conn):
    finish(consent_page(api, auth))
    first = store.host_credentials(conn, "c1")
    next(QboHook(realm_id=REALM, refresh_token=first["refresh_token"]).query("Invoice"))
    assert finish(consent_page(api, auth)).endswith("success=true")
    second = store.host_credentials(conn, "c1")
    assert second["refresh_token"] != first["refresh_token"]
    refreshes = sandbox.state("qbo")["refreshes"]
    assert next(QboHook(realm_id=REALM, refresh_token=second["refresh_token"]).query("Invoice"))["Id"]
    assert sandbox.state("qbo")["refreshes"] == refreshes + 1   # the new consent's token replaced the stored one
    seed = conn.execute("SELECT seed_fingerprint FROM etl.oauth_tokens WHERE vendor = 'qbo' AND scope = %s",
                        (REALM,)).fetchone()[0]
    assert seed == hashlib.sha256(second["refresh_token"].encode()).hexdigest()


def test_a_company_already_linked_to_another_connection_is_refused(api, auth, sandbox, conn):
    finish(consent_page(api, auth, "c1"))
    assert finish(consent_page(api, auth, "c2")) == f"{TF_SUCCESS}&error=company_already_linked"
    assert connection(api, auth, "c2")["authorized"] is False
    assert actions(api, auth, "c2")[0] == (f"QuickBooks authorization refused: QuickBooks company {REALM} is "
                                           "already linked to connection c1")
    sandbox.control("qbo", consent_realm=OTHER_REALM)
    assert finish(consent_page(api, auth, "c2")).endswith("success=true")
    assert connection(api, auth, "c2")["hostSystemIdentifier"] == f"qbo {OTHER_REALM}"


def _state_of(api: str, auth: dict) -> str:
    return parse_qs(urlsplit(start(api, auth).headers["location"]).query)["state"][0]


@pytest.mark.parametrize("forge", ["missing", "garbage", "altered", "other key", "other purpose", "expired"])
def test_a_forged_altered_or_expired_state_is_refused_without_a_redirect(api, auth, forge, monkeypatch):
    real = _state_of(api, auth)
    if forge == "altered":
        state = real[:40] + ("A" if real[40] != "A" else "B") + real[41:]
    elif forge == "other key":
        with monkeypatch.context() as other:
            other.setenv("INTEGRATIONS_FERNET_KEY", Fernet.generate_key().decode())
            state = consent.seal_state("c1", "https://evil.example/").value
    elif forge == "other purpose":   # e.g. stored credentials, encrypted with the same key
        state = encryption.encrypt(json.dumps({"connection_id": "c1", "redirect_uri": "https://evil.example/",
                                               "expires_at": 2**31})).decode()
    elif forge == "expired":
        monkeypatch.setattr(consent, "STATE_TTL_SECONDS", -1)
        state = _state_of(api, auth)
    else:
        state = {"missing": None, "garbage": "not-a-fernet-token"}[forge]
    response = requests.get(f"{api}/oauth/qbo/callback", params={"state": state, "code": "AB11x", "realmId": REALM},
                            allow_redirects=False, timeout=10)
    assert response.status_code == 400 and "location" not in response.headers
    assert response.json() == {"message": "This authorization link is invalid or has expired: start the "
                                          "authorization again from TrustFile."}
    assert connection(api, auth)["authorized"] is False and actions(api, auth) == ["Connection created"]


@pytest.mark.parametrize(("redirect", "message"), [
    (None, "Missing redirectUri"), ("  ", "Missing redirectUri"),
    ("javascript:alert(1)", "redirectUri must be an http(s) URL"),
    ("ftp://files.example/x", "redirectUri must be an http(s) URL"),
    ("https://", "redirectUri must be an http(s) URL"),
    ("https://app.trustfile.avalara.com/a b", "redirectUri must be an http(s) URL"),
    ("https://app.trustfile.avalara.com:99999/", "redirectUri must be an http(s) URL"),
])
def test_a_missing_or_bad_redirect_uri_is_a_400(api, auth, redirect, message):
    response = requests.get(f"{api}/connections/c1/authentication", params={"redirectUri": redirect},
                            headers=auth, allow_redirects=False, timeout=10)
    assert (response.status_code, response.json()) == (400, {"message": message})


def test_unknown_connection_is_404_and_a_host_without_oauth_is_400(api, auth, conn):
    unknown = start(api, auth, "nope")
    assert (unknown.status_code, unknown.json()) == (404, {"message": "Unknown connection nope"})
    conn.execute("UPDATE trustfile.connections SET host_system = 'servicetrade' WHERE connection_id = 'c2'")
    conn.commit()
    no_oauth = start(api, auth, "c2")
    assert (no_oauth.status_code, no_oauth.json()) == (400, {
        "message": "connection c2 reads servicetrade, which has no OAuth consent: its credentials are set by the "
                   "integrations team"})


def test_without_a_public_url_or_an_oauth_client_the_consent_cannot_start(serve, vendor_connections, auth,
                                                                         monkeypatch):
    monkeypatch.delenv("EXTRACTOR_PUBLIC_URL", raising=False)
    base = serve(public_url=None)
    requests.post(f"{base}/connections", json={"connectionId": "c1"}, headers=auth, timeout=10)
    response = start(base, auth)
    assert (response.status_code, response.json()) == (
        500, {"message": "EXTRACTOR_PUBLIC_URL is not set: the consent has no callback address"})
    monkeypatch.delenv("AIRFLOW_CONN_QBO_DEFAULT")
    response = start(serve(), auth)
    assert (response.status_code, response.json()) == (
        500, {"message": "the QuickBooks OAuth client (Airflow connection qbo_default) is not configured"})


def test_the_hook_builds_intuits_consent_url_and_explains_a_refused_code(vendor_connections, monkeypatch, sandbox):
    url = QboHook().authorization_url("s", "https://extractor.example/oauth/qbo/callback")
    assert url.startswith(f"{sandbox.url}/qbo/connect/oauth2?client_id={qbo_sandbox.CLIENT_ID}&response_type=code")
    client = {**vendor_connections["qbo_default"], "extra": {}}
    monkeypatch.setenv("AIRFLOW_CONN_QBO_DEFAULT", json.dumps(client))
    assert QboHook().authorization_url("s", "https://x.example/cb").startswith(f"{DEFAULT_AUTHORIZE_URL}?")

    monkeypatch.setenv("AIRFLOW_CONN_QBO_DEFAULT", json.dumps(vendor_connections["qbo_default"]))
    with pytest.raises(VendorApiError) as refused:
        QboHook().exchange_code("AB11never-issued-code", "http://127.0.0.1:1/cb")
    assert refused.value.status == 400 and "invalid_grant" in str(refused.value)
    assert "run the consent again" in str(refused.value) and "AB11never-issued-code" not in str(refused.value)
    assert len([r for r in sandbox.requests("qbo") if r["path"].endswith("/tokens/bearer")]) == 1   # not retried


def test_a_connection_holding_one_company_s_transactions_cannot_switch_to_another(api, auth, sandbox, conn):
    finish(consent_page(api, auth, "c1"))
    conn.execute(
        "INSERT INTO trustfile.transactions (connection_id, item_id, source_system, source_company, source_entity, "
        "source_id, kind, status, transaction_date, source_updated_at, sales_amount, sales_tax, shipping_amount, "
        "shipping_tax, source_total, currency, review_required, lines, item, content_hash) VALUES ('c1', "
        "'qbo-Invoice-1', 'qbo', %s, 'Invoice', '1', 'sale', 'active', '2026-01-05', now(), 10, 0, 0, 0, 10, 'USD', "
        "false, '[]', '{}', 'h')", (REALM,))
    conn.commit()
    sandbox.control("qbo", consent_realm=OTHER_REALM)
    assert finish(consent_page(api, auth, "c1")) == f"{TF_SUCCESS}&error=company_changed"
    assert connection(api, auth, "c1")["hostSystemIdentifier"] == f"qbo {REALM}"
    assert "delete the connection and create it again" in connection(api, auth, "c1")["statusMessage"]
    assert finish(consent_page(api, auth, "c2")).endswith("success=true")    # the other company, elsewhere: fine


def test_a_consent_for_an_id_outside_the_rule_is_a_400_naming_the_rule(api, auth):
    answer = start(api, auth, connection_id="x" * 101)
    assert answer.status_code == 400 and "1 to 100 characters" in answer.json()["message"]


# ---- review of the hardening commit: the callback's cost, its lock order, its vendor calls ----------------

class CountingProxy:
    """A TCP forwarder in front of the real PostgreSQL: the app reaches its database only through it, and
    `opened` counts the connections it opened."""

    def __init__(self, db_url: str):
        target = urlsplit(db_url)
        self._target = (target.hostname, target.port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = urlunsplit(target._replace(netloc=f"{target.netloc.rsplit('@', 1)[0]}@127.0.0.1:"
                                                     f"{self._listener.getsockname()[1]}"))
        self.opened = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.opened += 1
            upstream = socket.create_connection(self._target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def close(self) -> None:
        self._listener.close()


def registered_secrets() -> tuple[int, int, int]:
    """How many values the API server's masker, the task SDK's masker and our HTTP redactor hold."""
    from airflow._shared.secrets_masker import _secrets_masker as api_server_masker
    from airflow.sdk._shared.secrets_masker import _secrets_masker as sdk_masker

    from hooks.vendor_http import REDACTOR

    return len(api_server_masker().patterns), len(sdk_masker().patterns), len(REDACTOR._secrets)


def test_callbacks_with_a_forged_state_register_no_secret_and_open_no_database_connection(
        serve, vendor_connections, auth, db_url, sandbox, monkeypatch):
    proxy = CountingProxy(db_url)
    try:
        api = serve(conninfo=proxy.url)
        requests.post(f"{api}/connections", json={"connectionId": "c1"}, headers=auth, timeout=10)
        with monkeypatch.context() as expired:
            expired.setattr(consent, "STATE_TTL_SECONDS", -1)
            stale = consent.seal_state("c1", "https://app.trustfile.avalara.com/").value
        forged = [None, "not-a-fernet-token", _state_of(api, auth)[:-8] + "AAAAAAAA", stale]
        secrets_before, opened_before = registered_secrets(), proxy.opened
        for n in range(40):
            answer = requests.get(f"{api}/oauth/qbo/callback", timeout=10, allow_redirects=False, params={
                "state": forged[n % len(forged)], "code": random_values.token_urlsafe(24), "realmId": REALM})
            assert answer.status_code == 400
        assert registered_secrets() == secrets_before
        assert proxy.opened == opened_before

        assert finish(consent_page(api, auth)).endswith("success=true")   # the same server, a real consent
        assert proxy.opened > opened_before                                # ... reached the database through it
    finally:
        proxy.close()


@contextmanager
def paused_after_state_update(db_url: str):
    """While the block runs, a transaction that updates a consent state row stops right after that update
    (an AFTER UPDATE trigger waits for an advisory lock the block holds), keeping every lock it took so far;
    `release()` lets it go on. The way to hold a callback inside its race window with a DELETE."""
    gate = psycopg.connect(db_url, autocommit=True)
    gate.execute("CREATE OR REPLACE FUNCTION trustfile.test_pause() RETURNS trigger LANGUAGE plpgsql AS $$ "
                 "BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $$")
    gate.execute("CREATE TRIGGER test_pause AFTER UPDATE ON trustfile.consent_states "
                 "FOR EACH ROW EXECUTE FUNCTION trustfile.test_pause()")
    gate.execute("SELECT pg_advisory_lock(4242)")
    try:
        yield lambda: gate.execute("SELECT pg_advisory_unlock(4242)")
    finally:
        gate.execute("SELECT pg_advisory_unlock_all()")
        gate.execute("DROP TRIGGER test_pause ON trustfile.consent_states")
        gate.execute("DROP FUNCTION trustfile.test_pause()")
        gate.close()


def wait_for_a_backend(db_url: str, waiting_on: tuple[str, ...]) -> None:
    with psycopg.connect(db_url, autocommit=True) as watcher:
        deadline = time.monotonic() + 15
        query = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND wait_event_type = 'Lock' AND wait_event = ANY(%s)")
        while not watcher.execute(query, (list(waiting_on),)).fetchone()[0]:
            assert time.monotonic() < deadline, f"no backend waited on {waiting_on}"
            time.sleep(0.02)


@pytest.mark.parametrize("outcome", ["authorized", "denied"])
def test_a_callback_racing_a_delete_of_its_connection_never_deadlocks(api, auth, sandbox, db_url, outcome):
    """The callback has taken its locks (paused right after consuming its state) when TrustFile deletes the
    connection: the DELETE waits for it, then deletes; neither ends in a deadlock (before: 500)."""
    sandbox.control("qbo", consent_denied=outcome == "denied")
    back = consent_page(api, auth, "c1")
    answers = {}
    with paused_after_state_update(db_url) as release:
        callback_thread = threading.Thread(target=lambda: answers.update(
            callback=requests.get(back, allow_redirects=False, timeout=60)))
        callback_thread.start()
        wait_for_a_backend(db_url, ("advisory",))                 # the callback holds its locks
        delete_thread = threading.Thread(target=lambda: answers.update(
            delete=requests.delete(f"{api}/connections/c1", headers=auth, timeout=60)))
        delete_thread.start()
        wait_for_a_backend(db_url, ("transactionid", "tuple"))    # the DELETE waits for one of them
        release()
        callback_thread.join(timeout=60)
        delete_thread.join(timeout=60)
    callback_answer, delete_answer = answers["callback"], answers["delete"]
    assert callback_answer.status_code == 302, callback_answer.text
    assert callback_answer.headers["location"].endswith(
        "success=true" if outcome == "authorized" else "error=access_denied")
    assert (delete_answer.status_code, delete_answer.json()) == (200, {"success": True})
    assert requests.get(f"{api}/connections/c1", headers=auth, timeout=10).status_code == 404


def test_a_callback_for_a_connection_deleted_meanwhile_sends_the_browser_back_with_unknown_connection(
        api, auth, sandbox, db_url):
    """The DELETE commits while the callback talks to Intuit: the callback finds no connection to lock."""
    back = consent_page(api, auth, "c1")
    sandbox.faults("qbo", only_path="/companyinfo", latency_ms=1500)
    deleted = threading.Timer(0.5, lambda: requests.delete(f"{api}/connections/c1", headers=auth, timeout=10))
    deleted.start()
    answer = requests.get(back, allow_redirects=False, timeout=30)
    deleted.join()
    assert answer.status_code == 302 and answer.headers["location"] == f"{TF_SUCCESS}&error=unknown_connection"


def test_an_oauth_client_without_a_host_is_a_recorded_refusal_and_the_state_is_used(api, auth, sandbox,
                                                                                   vendor_connections, monkeypatch):
    back = consent_page(api, auth)
    monkeypatch.setenv("AIRFLOW_CONN_QBO_DEFAULT", json.dumps({**vendor_connections["qbo_default"], "host": ""}))
    assert finish(back) == f"{TF_SUCCESS}&error=server_error"
    assert connection(api, auth)["authorized"] is False
    assert actions(api, auth)[0] == ("QuickBooks authorization failed: the QuickBooks OAuth client (qbo_default) "
                                     "is not configured")
    replay = callback(back)
    assert (replay.status_code, replay.json()) == (400, USED)


@pytest.mark.parametrize(("path", "outcome"), [
    ("/tokens/bearer", "the code exchange with Intuit failed (throttled (HTTP 429))"),
    ("/companyinfo", "QuickBooks did not confirm the company (throttled (HTTP 429))")])
def test_intuit_throttling_during_the_callback_is_answered_at_once_not_waited_out(api, auth, sandbox, path,
                                                                                 outcome):
    """The browser is waiting: one attempt, no 61 s wait for QuickBooks' next minute."""
    back = consent_page(api, auth)
    sandbox.faults("qbo", only_path=path, throttle_next=5)
    started = time.monotonic()
    answer = requests.get(back, allow_redirects=False, timeout=20)
    assert time.monotonic() - started < 10
    assert (answer.status_code, answer.headers["location"]) == (302, f"{TF_SUCCESS}&error=server_error")
    assert len([r for r in sandbox.requests("qbo") if path in r["path"]]) == 1
    assert actions(api, auth)[0] == f"QuickBooks authorization failed: {outcome}"
