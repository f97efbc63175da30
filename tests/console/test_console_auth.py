"""The Integrations page and its docs inside Airflow's own API server: mounted by our plugin, in the navigation,
and authenticated and authorized by Airflow's auth manager (here the SimpleAuthManager and its real JWTs)."""
from __future__ import annotations

import time

import httpx
import jwt
import pytest

PAGE = "/integrations/"
RUNBOOK = "/integrations/docs/runbook.md"
IMAGE = "/integrations/docs/images/integrations-page.png"


@pytest.fixture
def client(airflow_api):
    with httpx.Client(base_url=airflow_api.url, timeout=30) as client:
        yield client


@pytest.mark.parametrize("path", [PAGE, RUNBOOK, IMAGE, "/integrations/docs/"])
def test_anonymous_is_refused(client, console_db, path):
    answer = client.get(path)

    assert answer.status_code == 401
    assert "Acme" not in answer.text


def test_a_token_airflow_did_not_sign_is_refused(client, console_db):
    forged = jwt.encode({"sub": "admin", "role": "ADMIN", "aud": "apache-airflow"}, "not-the-secret" * 8,
                        algorithm="HS512")

    for path in (PAGE, RUNBOOK):
        assert client.get(path, cookies={"_token": forged}).status_code == 403


def test_a_browser_without_a_session_is_sent_to_airflows_login_and_back(airflow_api, client, console_db):
    answer = client.get(PAGE, headers={"Accept": "text/html,application/xhtml+xml"})

    assert answer.status_code == 307
    location = httpx.URL(answer.headers["location"])
    assert location.path == "/auth/login"
    assert location.params["next"] == airflow_api.url + PAGE


def test_a_logged_in_viewer_sees_every_one_of_500_scopes_in_under_a_second(airflow_api, client, seed):
    names = seed.many(500)
    seed.conn.commit()
    token = airflow_api.token("viewer")
    client.get(RUNBOOK, cookies={"_token": token})        # the app is built on its first request, as in Airflow

    started = time.perf_counter()
    answer = client.get(PAGE, cookies={"_token": token})    # the cookie the UI keeps its JWT in
    elapsed = time.perf_counter() - started

    assert answer.status_code == 200, answer.text[:500]
    assert answer.headers["content-type"].startswith("text/html")
    missing = [name for name in names if f">{name}<" not in answer.text]
    assert missing == []
    print(f"GET /integrations/ with 500 scopes: {elapsed * 1000:.0f} ms, {len(answer.content) // 1024} KiB")
    assert elapsed < 1.0


def test_an_api_client_may_send_the_token_as_a_bearer(airflow_api, client, console_db):
    answer = client.get(PAGE, headers={"Authorization": f"Bearer {airflow_api.token('admin')}"})

    assert answer.status_code == 200


def test_the_docs_need_the_login_too_and_are_served_to_a_viewer(airflow_api, client, console_db):
    token = airflow_api.token("viewer")

    page = client.get(RUNBOOK, cookies={"_token": token})
    image = client.get(IMAGE, cookies={"_token": token})

    assert page.status_code == 200 and '<h1 id="runbook">Runbook</h1>' in page.text
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")


@pytest.mark.parametrize("raw_path", [
    "/integrations/docs/..%2F..%2Fpyproject.toml", "/integrations/docs/%2e%2e/%2e%2e/pyproject.toml",
    "/integrations/docs/..%2Fplugins%2Fconsole%2Fapp.py", "/integrations/docs/nothing-here.md",
])
def test_nothing_outside_docs_is_served(airflow_api, client, console_db, raw_path):
    answer = client.get(httpx.URL(airflow_api.url + raw_path), cookies={"_token": airflow_api.token("viewer")})

    assert answer.status_code == 404
    assert "importlinter" not in answer.text


def test_the_page_is_in_airflows_navigation(airflow_api, client, console_db):
    answer = client.get("/api/v2/plugins", headers={"Authorization": f"Bearer {airflow_api.token('admin')}"})

    plugin = next(p for p in answer.json()["plugins"] if p["name"] == "integrations_console")
    assert [(a["url_prefix"], a["name"]) for a in plugin["fastapi_apps"]] == [("/integrations", "Integrations page")]
    [view] = plugin["external_views"]
    assert (view["name"], view["href"], view["destination"], view["url_route"]) == (
        "Integrations", "/integrations/", "nav", "integrations")
