"""The credential registry's engine on a real PostgreSQL, with the clock in the test's hands."""
from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from etl import credentials
from etl.credentials import CheckFailed, Credential

UTC = dt.timezone.utc
EXPIRY = dt.datetime(2026, 9, 1, tzinfo=UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture
def registry(conn):
    conn.execute("TRUNCATE etl.credentials CASCADE")
    conn.commit()
    return conn


def vpn(expires_at=EXPIRY, used_by=("the office router",), **fields) -> Credential:
    return Credential("external:vpn", "platform", "external", "Office VPN key", owner="ops", expires_at=expires_at,
                      used_by=used_by, **fields)


def days_alerted(conn, days: range, declared=None) -> tuple[list[int], list[str]]:
    """Run the daily report once a day for `days` (days before EXPIRY); the days it alerted on, and the texts."""
    sent: list[str] = []
    alerted = []
    for left in days:
        if declared is not None:
            credentials.register(conn, declared)
        before = len(sent)
        credentials.report(conn, EXPIRY - left * DAY, sent.append)
        if len(sent) > before:
            alerted.append(left)
    return alerted, sent


def test_alerts_once_on_days_30_14_7_and_1_then_fails_once_expired(registry):
    credentials.register(registry, [vpn()])
    alerted, sent = days_alerted(registry, range(35, 0, -1))
    assert alerted == [30, 14, 7, 1]
    assert "Office VPN key (external:vpn, owner ops) expires on 2026-09-01 00:00 UTC, in 30 days" in sent[0]
    assert "used by: the office router" in sent[0] and "docs/credentials.md" in sent[0]
    assert "in 1 day" in sent[-1]
    rows = registry.execute("SELECT days_before, expires_at FROM etl.credential_alerts ORDER BY 1").fetchall()
    assert rows == [(1, EXPIRY), (7, EXPIRY), (14, EXPIRY), (30, EXPIRY)]

    assert days_alerted(registry, range(1, 0, -1)) == ([], [])          # the same day again: nothing new
    with pytest.raises(credentials.CredentialsNeedAction, match=r"Office VPN key \(external:vpn\) expired on "
                                                                r"2026-09-01 00:00 UTC"):
        credentials.report(registry, EXPIRY + dt.timedelta(hours=1), [].append)


def test_a_credential_first_seen_close_to_its_expiry_alerts_once_not_once_per_threshold(registry):
    credentials.register(registry, [vpn()])
    sent: list[str] = []
    credentials.report(registry, EXPIRY - 5 * DAY + dt.timedelta(hours=3), sent.append)
    assert len(sent) == 1 and "in 4 days" in sent[0]
    assert {r[0] for r in registry.execute("SELECT days_before FROM etl.credential_alerts")} == {30, 14, 7}
    assert days_alerted(registry, range(4, 0, -1))[0] == [1]


def test_a_rotation_moves_the_expiry_and_its_alerts_start_afresh(registry):
    assert days_alerted(registry, range(35, 6, -1), declared=[vpn()])[0] == [30, 14, 7]
    rotated = EXPIRY + 365 * DAY
    credentials.register(registry, [vpn(expires_at=rotated)])
    sent: list[str] = []
    credentials.report(registry, EXPIRY - 6 * DAY, sent.append)
    assert sent == []
    credentials.report(registry, rotated - 30 * DAY, sent.append)
    assert len(sent) == 1 and "expires on 2027-09-01" in sent[0]


def test_the_headline_names_the_next_expiration(registry):
    credentials.register(registry, [
        vpn(),
        Credential("external:later", "platform", "external", "Later key", owner="ops", expires_at=EXPIRY + 90 * DAY),
        Credential("airflow:never", "trustfile", "airflow_connection", "No expiry", owner="integrations"),
    ])
    headline = credentials.next_expiration(registry, EXPIRY - 45 * DAY)
    assert headline.startswith("Next expiration: Office VPN key (external:vpn, owner ops) on 2026-09-01 00:00 UTC, "
                               "in 45 days")
    assert "3 credentials tracked, 1 without a known expiry" in headline
    registry.execute("TRUNCATE etl.credentials CASCADE")
    assert credentials.next_expiration(registry, EXPIRY).startswith("Next expiration: none known")


def test_register_upserts_what_is_declared_and_forgets_what_is_not(registry):
    credentials.register(registry, [vpn(), Credential("airflow:gone", "trustfile", "airflow_connection", "Gone")])
    registry.execute("UPDATE etl.credentials SET last_verified_at = %s", (EXPIRY,))
    registry.commit()
    result = credentials.register(registry, [
        vpn(notes="rotated by the office"),
        Credential("airflow:shared", "trustfile", "airflow_connection", "Shared", used_by=("dag_a",)),
        Credential("airflow:shared", "trustfile", "airflow_connection", "Shared", used_by=("dag_b", "dag_a")),
    ])
    assert result == {"registered": 2, "removed": ["airflow:gone"]}
    rows = registry.execute("SELECT credential_id, notes, last_verified_at, used_by FROM etl.credentials "
                            "ORDER BY 1").fetchall()
    assert rows == [("airflow:shared", None, None, ["dag_a", "dag_b"]),
                    ("external:vpn", "rotated by the office", EXPIRY, ["the office router"])]


def test_verify_records_successes_and_failures_within_each_credential_s_budget(registry):
    calls: list[str] = []
    learned = EXPIRY + 900 * DAY

    def works(conn):
        calls.append("qbo")
        return learned

    def refused(conn):
        calls.append("st")
        raise CheckFailed("ServiceTrade POST /auth failed: HTTP 401")

    declared = [Credential("qbo:refresh_token:1", "trustfile", "oauth_refresh_token", "QBO", scope="c1",
                           check=works, once_a_day=True),
                Credential("airflow:st", "trustfile", "airflow_connection", "ST", check=refused),
                vpn()]
    credentials.register(registry, declared)
    now = dt.datetime(2026, 6, 1, 0, 5, tzinfo=UTC)
    results = credentials.verify(registry, declared, now)
    assert [(r.credential_id, r.ok, r.skipped) for r in results] == [
        ("qbo:refresh_token:1", True, False), ("airflow:st", False, False)]
    rows = {r[0]: r[1:] for r in registry.execute(
        "SELECT credential_id, last_verified_at, last_checked_at, last_verify_error, expires_at FROM etl.credentials")}
    assert rows["qbo:refresh_token:1"] == (now, now, None, learned)
    assert rows["airflow:st"] == (None, now, "ServiceTrade POST /auth failed: HTTP 401", None)

    credentials.verify(registry, declared, now + dt.timedelta(hours=20))      # a rerun the same day
    assert calls == ["qbo", "st", "st"]
    credentials.verify(registry, declared, now + DAY)                           # the next day
    credentials.verify(registry, declared, now + DAY, force=True)               # a rotation asks explicitly
    assert calls == ["qbo", "st", "st", "qbo", "st", "qbo", "st"]
    with pytest.raises(credentials.CredentialsNeedAction, match=r"ST \(airflow:st\) failed its check at .*HTTP 401"):
        credentials.report(registry, now + DAY, [].append)


def test_a_successful_check_clears_the_previous_error(registry):
    outcome = {"ok": False}

    def check(conn):
        if not outcome["ok"]:
            raise CheckFailed("refused")
        return None

    declared = [Credential("airflow:tf", "trustfile", "airflow_connection", "TF", expires_at=EXPIRY, check=check)]
    credentials.register(registry, declared)
    credentials.verify(registry, declared, EXPIRY - 100 * DAY)
    outcome["ok"] = True
    credentials.verify(registry, declared, EXPIRY - 99 * DAY)
    assert registry.execute("SELECT last_verified_at, last_verify_error, expires_at FROM etl.credentials").fetchone() \
        == (EXPIRY - 99 * DAY, None, EXPIRY)


def test_select_names_the_closest_valid_ids_or_refuses_what_cannot_be_checked(registry):
    declared = [vpn(), Credential("airflow:trustfile_default", "trustfile", "airflow_connection", "TF",
                                  check=lambda conn: None)]
    assert credentials.select(declared, "airflow:trustfile_default").name == "TF"
    with pytest.raises(credentials.UnknownCredential, match=r"no credential 'airflow:trustfile_defualt'.*"
                                                            r"'airflow:trustfile_default'"):
        credentials.select(declared, "airflow:trustfile_defualt")
    with pytest.raises(credentials.NotCheckable, match=r"include/credentials.yaml"):
        credentials.select(declared, "external:vpn")


def test_external_credentials_come_from_a_declarative_file(tmp_path):
    path = tmp_path / "credentials.yaml"
    path.write_text(textwrap.dedent("""
        credentials:
          - id: vpn
            name: Office VPN key
            owner: ops
            expires: 2026-09-01
            last_verified: 2026-05-01
            used_by: [the office router, the night-batch Lambda]
          - id: webhook
            name: Chat webhook
            owner: integrations
            integration: platform
            expires: null
            used_by: [every DAG's failure alert]
            notes: ALERT_WEBHOOK_URL
    """))
    vpn_entry, webhook = credentials.load_external(path)
    assert vpn_entry == vpn(last_verified_at=dt.datetime(2026, 5, 1, tzinfo=UTC),
                            used_by=("the office router", "the night-batch Lambda"))
    assert (webhook.credential_id, webhook.expires_at, webhook.notes) == ("external:webhook", None, "ALERT_WEBHOOK_URL")


@pytest.mark.parametrize(("entry", "problem"), [
    ("- {name: No id, owner: ops, expires: null, used_by: [x]}", "entry 1 has no id"),
    ("- {id: a, name: A, expires: null, used_by: [x]}", "'a' has no owner"),
    ("- {id: a, name: A, owner: ops, expires: next year, used_by: [x]}", "'a': expires 'next year' is not a date"),
    ("- {id: a, name: A, owner: ops, expires: null, used_by: []}", "'a' has no used_by"),
    ("- {id: a, name: A, owner: ops, expires: null, used_by: [x]}\n- {id: a, name: B, owner: ops, expires: null, "
     "used_by: [y]}", "'a' is declared twice"),
])
def test_a_malformed_external_entry_names_itself_and_the_file(tmp_path, entry, problem):
    path = tmp_path / "credentials.yaml"
    path.write_text("credentials:\n" + textwrap.indent(entry, "  ") + "\n")
    with pytest.raises(ValueError, match=problem) as caught:
        credentials.load_external(path)
    assert str(path) in str(caught.value)


def test_the_repository_s_external_file_loads():
    entries = credentials.load_external()
    assert entries and all(e.kind == "external" and e.owner and e.used_by for e in entries)


def test_every_kind_s_runbook_section_exists():
    from notifiers.runbook import slug

    page = (Path(__file__).resolve().parents[2] / "docs" / credentials.RUNBOOK_PAGE).read_text()
    anchors = {slug(line.lstrip("#")) for line in page.splitlines() if line.startswith("#")}
    assert {slug(heading) for heading in credentials.RUNBOOK_SECTIONS.values()} <= anchors
