"""The pieces of `make up`'s demo and banner that need no running platform (issue 10, point 4); the whole of it
runs in tests/stack/test_stack.py."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import stack.__main__ as stack_main
from stack import demo, settings
from stack.processes import write_private

ROOT = Path(__file__).resolve().parents[2]
LOCAL = {"admin_password": "the-admin-password", "sandboxed": ["qbo_default", "trustfile_default"],
         "sandbox_fresh": False}


@pytest.mark.parametrize(("value", "wanted"), [(None, True), ("1", True), ("yes", True), ("0", False),
                                               ("false", False), ("OFF", False), ("no", False)])
def test_demo_is_on_unless_demo_is_0(value, wanted):
    env = {k: v for k, v in os.environ.items() if k != "DEMO"} | ({} if value is None else {"DEMO": value})
    shown = subprocess.run([sys.executable, "-c", "from stack import settings; print(settings.DEMO)"], cwd=ROOT,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert shown == str(wanted)


def test_demo_0_seeds_nothing_and_unpauses_nothing(monkeypatch):
    monkeypatch.setattr(settings, "DEMO", False)

    def untouchable(*args, **kwargs):
        raise AssertionError("DEMO=0 reached the platform")

    monkeypatch.setattr(demo, "Platform", untouchable)
    assert stack_main.run_demo(dict(LOCAL), {}, lambda: False) == [
        "DEMO=0: no demo tenant seeded, no DAG unpaused (Airflow creates DAGs paused: unpause them in the UI)"]


def test_the_banner_gives_every_address_and_a_curl_that_reads_the_token_without_showing_it(tmp_path, monkeypatch):
    token = "the-extractor-token-from-the-file"
    secrets_file = tmp_path / "my secrets.json"                   # a space in the path, quoted for the shell
    write_private(secrets_file, f'{{"avalara_to_extractor_token": "{token}"}}')
    monkeypatch.setattr(settings, "SECRETS_FILE", secrets_file)
    monkeypatch.delenv("AVALARA_TO_EXTRACTOR_TOKEN", raising=False)
    text = stack_main.banner(dict(LOCAL), ["a demo line"])

    base = f"http://127.0.0.1:{settings.API_PORT}"
    for address in (base, f"{base}/integrations/", f"{base}/extractor", f"http://127.0.0.1:{settings.SANDBOX_PORT}"):
        assert address in text
    assert "login:         admin / the-admin-password" in text and "    a demo line" in text
    assert token not in text and f"avalara_to_extractor_token in {secrets_file}" in text
    curl = next(line.strip() for line in text.splitlines() if line.strip().startswith("curl "))
    header = re.search(r'-H "(Authorization: Bearer .*)" http', curl).group(1)
    assert subprocess.run(["bash", "-c", f'echo "{header}"'], capture_output=True, text=True,
                          check=True).stdout.strip() == f"Authorization: Bearer {token}"


def test_the_banner_points_at_the_environment_when_the_token_comes_from_there(monkeypatch):
    monkeypatch.setenv("AVALARA_TO_EXTRACTOR_TOKEN", "from-the-environment")
    text = stack_main.banner(dict(LOCAL), [])
    assert "from-the-environment" not in text
    assert '-H "Authorization: Bearer $AVALARA_TO_EXTRACTOR_TOKEN"' in text


def test_the_dag_files_are_those_the_dag_processor_parses():
    assert demo.dag_files() >= {"trustfile_sync.py", "integrations_maintenance.py"}
    assert demo.dag_files() <= {p.name for p in (ROOT / "dags").glob("*.py")}


def test_the_demo_starts_inside_the_sandboxs_data():
    """The sandbox's documents are dated January 2026 (docs/demo.md): the demo's start date is before them."""
    from sandbox import qbo, servicetrade

    assert demo.START_DATE <= qbo.T0.date().isoformat()
    assert demo.START_DATE <= "2026-01-01" and servicetrade.T0 == 1_767_225_600      # 2026-01-01T00:00:00Z
    assert "January 2026" in (ROOT / "docs" / "demo.md").read_text()
    assert "January 2026" in (ROOT / "docs" / "integrations" / "sandbox.md").read_text()


def test_a_sandbox_started_without_its_state_says_what_brings_each_connection_back(clean_db, db_url):
    """A connection authorized at a sandbox company must consent again; one signed up to the sandbox's
    TrustFile must be provisioned again (before, both were told to re-authorize)."""
    from etl.encryption import encrypt
    from integrations.trustfile import connections, consent, signup
    from sandbox import qbo

    connections.create(clean_db, "created-by-trustfile", None)
    consent.authorize_qbo(clean_db, "created-by-trustfile", qbo.REALMS[1], "refresh-1")
    provisioned, _ = signup.register_signup(clean_db, "provisioned", "p@example.com", "P Co", "qbo")
    signup.record_signup(clean_db, provisioned, encrypt("company-token"))
    consent.authorize_qbo(clean_db, provisioned, qbo.REALMS[2], "refresh-2")
    elsewhere, _ = signup.register_signup(clean_db, "servicetrade", "s@example.com", "S Co", "servicetrade")
    signup.record_signup(clean_db, elsewhere, encrypt("company-token-2"))

    stack_main.forget_sandbox_tokens(db_url, trustfile_sandboxed=True)
    rows = {r[0]: r[1:] for r in clean_db.execute(
        "SELECT connection_id, host_credentials IS NOT NULL, status_message FROM trustfile.connections")}
    assert rows["created-by-trustfile"] == (False, "the local sandbox started without its saved state "
                                                   "(sandbox-state.json): authorize QuickBooks again")
    for connection_id, authorized in ((provisioned, False), (elsewhere, True)):
        assert rows[connection_id][0] is authorized
        assert rows[connection_id][1].endswith("the TrustFile company this connection was signed up as is gone; "
                                               "delete the connection (DELETE /extractor/connections/{id}) and "
                                               "provision it again")
