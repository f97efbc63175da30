"""include/oms_pro.yaml: it loads as a typed tree, a missing or unknown key is named with the file, and
`check_against` compares it with the sandbox's seeded OMS-Pro, naming every missing view and field."""
from __future__ import annotations

import json

import pytest
import yaml

from hooks.trackvia import TrackViaHook
from integrations.oms import config

SEEDED = yaml.safe_load(config.CONFIG_FILE.read_text())


def write(tmp_path, document) -> str:
    path = tmp_path / "oms_pro.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def test_the_shipped_file_loads_as_a_typed_tree():
    loaded = config.load()
    assert loaded.app == "OMS-Pro"
    assert loaded.payment_linking.tickets.view == "All Tickets"
    assert loaded.payment_linking.tickets.paid == config.PaidField("Paid", "Yes", "No")
    assert loaded.completed_dates.site_visits.view == "Site Visits by Updated"
    assert loaded.completed_dates.tickets.completed_value == "Completed"
    assert loaded.sweeps == {}


def test_a_missing_and_an_unknown_key_are_both_named_with_the_file(tmp_path):
    document = json.loads(json.dumps(SEEDED))
    del document["completed_dates"]["tickets"]["completed_date"]
    document["payment_linking"]["tickets"]["paid"]["color"] = "green"
    path = write(tmp_path, document)
    with pytest.raises(config.ConfigError) as raised:
        config.load(path)
    text = str(raised.value)
    assert text.startswith(path)
    assert "missing key 'completed_dates.tickets.completed_date'" in text
    assert "unknown key 'payment_linking.tickets.paid.color'" in text


@pytest.mark.parametrize("document, message", [
    ({**SEEDED, "app": ""}, "'app' must be a non-empty name"),
    ({**SEEDED, "sweeps": None}, "'sweeps' must be a mapping"),
    ({k: v for k, v in SEEDED.items() if k != "payment_linking"}, "missing key 'payment_linking'"),
    ({**SEEDED, "completed_dates": ["Tickets by Updated"]},
     "completed_dates must be a mapping of tickets, site_visits"),
    ("just text", "the top level must be a mapping"),
])
def test_malformed_values_are_named(tmp_path, document, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(write(tmp_path, document))


@pytest.fixture
def hook(sandbox, monkeypatch, db_url, conn):
    from sandbox import trackvia as tv

    conn.execute("TRUNCATE etl.request_budgets")
    conn.commit()
    monkeypatch.setenv("AIRFLOW_CONN_TRACKVIA_DEFAULT", json.dumps(
        {"conn_type": "trackvia", "host": f"{sandbox.url}/trackvia", "password": tv.TOKEN,
         "extra": {"api_key": tv.USER_KEY}}))
    return TrackViaHook(conninfo=db_url)


def test_the_shipped_file_matches_the_seeded_app(hook, sandbox):
    config.check_against(config.load(), hook)
    assert sandbox.state("trackvia")["delete_requests"] == 0


def test_a_missing_view_and_a_missing_field_are_both_named(hook, tmp_path):
    document = json.loads(json.dumps(SEEDED))
    document["completed_dates"]["site_visits"]["view"] = "Site Visits by Colour"
    document["completed_dates"]["tickets"]["completed_date"] = "Closed On"
    with pytest.raises(config.ConfigError) as raised:
        config.check_against(config.load(write(tmp_path, document)), hook)
    text = str(raised.value)
    assert "OMS-Pro has no view 'Site Visits by Colour' (views: " in text and "Site Visits by Updated" in text
    assert "OMS-Pro view 'Tickets by Updated' has no field 'Closed On' (fields: " in text
    assert "Completed Date" in text.split("'Closed On'")[1]
