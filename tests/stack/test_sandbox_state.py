"""`python -m sandbox --state-file`: what `make up`'s sandbox keeps across restarts (issue 10, point 4).

Before, a restart forgot the companies signed up to TrustFile and every QuickBooks token it had issued, so
the platform's stored tokens and company tokens stopped working. Each test drives the real sandbox
process over HTTP, stops it as `make down` does (SIGTERM) or harder, and starts it again on the same file."""
from __future__ import annotations

import base64
import json
import signal
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from sandbox import launch, qbo, servicetrade, trustfile

BASIC = {"Authorization": "Basic " + base64.b64encode(f"{qbo.CLIENT_ID}:{qbo.CLIENT_SECRET}".encode()).decode()}
TRUSTFILE = {"Authorization": f"Bearer {trustfile.TOKEN}"}
CALLBACK = "http://127.0.0.1:9/extractor/oauth/qbo/callback"
ITEM = {"itemId": "qbo-Invoice-1", "transactionDate": "2026-01-05T00:00:00Z", "salesAmount": 10, "salesTax": 1,
        "shippingAmount": 0, "shippingTax": 0, "refund": False, "shipToAddress": {"state": "CA", "zip": "93722"}}


def _start(path: Path):
    return launch.start("--state-file", str(path))


def _stop(process, sig=signal.SIGTERM) -> None:
    process.send_signal(sig)
    process.wait(timeout=30)


def _consent(url: str, realm: str) -> dict:
    """The authorization-code grant, as our consent callback makes it: a token pair for `realm`."""
    requests.put(f"{url}/_sandbox/control/qbo", json={"consent_realm": realm}, timeout=10).raise_for_status()
    page = requests.get(f"{url}/qbo/connect/oauth2", allow_redirects=False, timeout=10, params={
        "client_id": qbo.CLIENT_ID, "response_type": "code", "scope": qbo.ACCOUNTING_SCOPE,
        "redirect_uri": CALLBACK, "state": "s"})
    code = parse_qs(urlsplit(page.headers["location"]).query)["code"][0]
    grant = requests.post(f"{url}/qbo/oauth2/v1/tokens/bearer", headers=BASIC, timeout=10,
                          data={"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK})
    grant.raise_for_status()
    return grant.json()


def _refresh(url: str, refresh_token: str) -> requests.Response:
    return requests.post(f"{url}/qbo/oauth2/v1/tokens/bearer", headers=BASIC, timeout=10,
                         data={"grant_type": "refresh_token", "refresh_token": refresh_token})


def _count(url: str, realm: str, access_token: str) -> requests.Response:
    return requests.get(f"{url}/qbo/v3/company/{realm}/query", timeout=10,
                        headers={"Authorization": f"Bearer {access_token}"},
                        params={"query": "SELECT COUNT(*) FROM Invoice", "minorversion": "75"})


def _sign_up(url: str, email: str) -> str:
    answer = requests.post(f"{url}/trustfile/v4/company/signup", headers=TRUSTFILE, timeout=10,
                           json={"email": email, "companyName": "Kept Co", "companyState": "CA"})
    answer.raise_for_status()
    return answer.json()["companyToken"]


def test_a_restart_keeps_companies_tokens_items_sessions_and_edits(tmp_path):
    path = tmp_path / "sandbox-state.json"
    process, url = _start(path)
    try:
        realm = qbo.REALMS[1]
        company = _sign_up(url, "kept@example.com")       # the generator's first draw: see below
        grant = _consent(url, realm)
        rotated = _refresh(url, grant["refresh_token"]).json()
        pushed = requests.post(f"{url}/trustfile/v3/connections/{company}/items", headers=TRUSTFILE, timeout=10,
                               json={"items": [ITEM]})
        assert pushed.status_code == 200
        session = requests.Session()
        session.post(f"{url}/servicetrade/api/auth", timeout=10,
                     json={"username": servicetrade.USERNAME, "password": servicetrade.PASSWORD}).raise_for_status()
        requests.put(f"{url}/_sandbox/control/qbo", timeout=10, json={"touch": [
            {"realm": realm, "entity": "Invoice", "id": "141", "fields": {"DocNumber": "EDITED"}}]}).raise_for_status()
    finally:
        _stop(process)                                     # `make down`: SIGTERM

    assert oct(path.stat().st_mode & 0o777) == "0o600"
    saved = path.read_text()
    assert company in saved and rotated["refresh_token"] in saved

    process, url = _start(path)
    try:
        assert requests.get(f"{url}/health", timeout=10).json()["state_file"]["restored"] is True
        # The random generator goes on where it stopped: reseeded, this signup would get the first company's
        # token (its first draw) and overwrite that company.
        assert _sign_up(url, "second@example.com") != company
        assert _count(url, realm, rotated["access_token"]).json()["QueryResponse"]["totalCount"] == 40
        assert _refresh(url, rotated["refresh_token"]).status_code == 200       # the latest token still works
        assert _refresh(url, grant["refresh_token"]).status_code == 400         # the rotated-away one stays dead
        items = requests.get(f"{url}/_sandbox/state/trustfile", timeout=10).json()["items"]
        assert [i["itemId"] for i in items[company]] == ["qbo-Invoice-1"]
        assert requests.get(f"{url}/trustfile/v3/connections/{company}", headers=TRUSTFILE,
                            timeout=10).json()["company"]["name"] == "Kept Co"
        assert session.get(f"{url}/servicetrade/api/invoice", timeout=10).status_code == 200   # the session lives
        edited = requests.get(f"{url}/qbo/v3/company/{realm}/query", timeout=10,
                              headers={"Authorization": f"Bearer {rotated['access_token']}"},
                              params={"query": "SELECT * FROM Invoice MAXRESULTS 1000", "minorversion": "75"})
        assert [r["DocNumber"] for r in edited.json()["QueryResponse"]["Invoice"] if r["Id"] == "141"] == ["EDITED"]
        # A signup that already exists is still refused after the restart.
        assert requests.post(f"{url}/trustfile/v4/company/signup", headers=TRUSTFILE, timeout=10, json={
            "email": "kept@example.com", "companyName": "Kept Co"}).status_code == 400
    finally:
        _stop(process)


def test_a_change_is_on_disk_within_a_second_even_if_the_sandbox_is_killed(tmp_path):
    path = tmp_path / "sandbox-state.json"
    process, url = _start(path)
    try:
        company = _sign_up(url, "quick@example.com")
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and not (path.exists() and company in path.read_text()):
            time.sleep(0.05)
    finally:
        _stop(process, signal.SIGKILL)                     # no shutdown hook ran
    assert company in path.read_text()
    process, url = _start(path)
    try:
        assert requests.get(f"{url}/trustfile/v3/connections/{company}", headers=TRUSTFILE,
                            timeout=10).status_code == 200
    finally:
        _stop(process)


def test_an_unreadable_state_file_is_set_aside_and_the_sandbox_starts_afresh(tmp_path):
    path = tmp_path / "sandbox-state.json"
    path.write_text(json.dumps({"version": 999}))
    process, url = _start(path)
    try:
        assert requests.get(f"{url}/health", timeout=10).json()["state_file"]["restored"] is False
        assert (tmp_path / "sandbox-state.json.unreadable").exists()
        assert _refresh(url, qbo.INITIAL_REFRESH_TOKENS[qbo.REALMS[0]]).status_code == 200
    finally:
        _stop(process)
