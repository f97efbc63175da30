"""include/oms_pro.yaml: it loads as a typed tree, a missing or unknown key is named with the file, and
`check_against` compares it with the sandbox's seeded OMS-Pro, naming every missing view and field."""
from __future__ import annotations

import json

import pytest
import yaml

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
    assert sorted(loaded.sweeps) == ["cancelled_tickets_low_priority", "completed_visits_date_from_status_change",
                                     "tickets_default_priority"]
    assert loaded.sweeps["cancelled_tickets_low_priority"].set.value == "Low"


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
def hook(trackvia_hook):
    return trackvia_hook


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


def test_the_shipped_file_links_the_sandbox_company_of_make_up():
    assert config.load().payment_linking.qbo_connections == ("qbo_oms_pro",)


@pytest.mark.parametrize("value, message", [
    (None, "missing key 'payment_linking.qbo_connections'"),
    ([], "'payment_linking.qbo_connections' must be a non-empty list of names, not []"),
    ("qbo_oms_pro", "'payment_linking.qbo_connections' must be a non-empty list of names, not 'qbo_oms_pro'"),
    (["qbo_oms_pro", ""], "'payment_linking.qbo_connections' must be a non-empty list of names"),
    ({"qbo_oms_pro": True}, "'payment_linking.qbo_connections' must be a non-empty list of names"),
], ids=["missing", "empty", "a name, not a list", "an empty name", "a mapping"])
def test_qbo_connections_missing_empty_or_not_a_list_is_named(tmp_path, value, message):
    document = json.loads(json.dumps(SEEDED))
    if value is None:
        del document["payment_linking"]["qbo_connections"]
    else:
        document["payment_linking"]["qbo_connections"] = value
    path = write(tmp_path, document)
    with pytest.raises(config.ConfigError) as raised:
        config.load(path)
    assert str(raised.value).startswith(path) and message in str(raised.value)


def test_the_shipped_sweeps_match_the_seeded_app_and_a_broken_one_is_named_alone(hook, tmp_path):
    loaded = config.load()
    config.check_against(loaded, hook, pipelines=tuple(f"sweep {name}" for name in loaded.sweeps))
    document = yaml.safe_load(config.CONFIG_FILE.read_text())
    document["sweeps"]["tickets_default_priority"]["set"]["field"] = "Urgency"
    broken = config.load(write(tmp_path, document))

    config.check_against(broken, hook)                      # the scheduled pipelines do not use the sweep
    with pytest.raises(config.ConfigError, match="view 'Tickets by Updated': no field 'Urgency', used by sweep "
                                                 "tickets_default_priority"):
        config.check_against(broken, hook, pipelines=("sweep tickets_default_priority",))


def test_a_malformed_sweep_fails_the_load_naming_its_key(tmp_path):
    document = yaml.safe_load(config.CONFIG_FILE.read_text())
    del document["sweeps"]["tickets_default_priority"]["where"]
    with pytest.raises(config.ConfigError, match="'sweeps.tickets_default_priority.where' must be a non-empty list"):
        config.load(write(tmp_path, document))


def test_the_sweeps_are_read_as_written_text_not_as_yaml_numbers_or_times(tmp_path):
    text = config.CONFIG_FILE.read_text().replace(
        "  tickets_default_priority:", """  zip_and_slot:
    description: values YAML 1.1 would turn into numbers
    view: Tickets by Updated
    where:
      - {field: QBO Payment IDs, in: [02134, 12:30, 1_000, 1.50]}
      - {field: Region, empty: false}
    set: {field: QBO Payment IDs, value: 02134}
  tickets_default_priority:""", 1)
    path = tmp_path / "oms_pro.yaml"
    path.write_text(text)
    zip_and_slot = config.load(path).sweeps["zip_and_slot"]
    assert zip_and_slot.set.value == "02134"
    assert zip_and_slot.where[0].operand == ("02134", "12:30", "1_000", "1.50")
    assert zip_and_slot.where[1].operand is False


def test_a_qbo_connection_named_twice_is_refused(tmp_path):
    document = yaml.safe_load(config.CONFIG_FILE.read_text())
    document["payment_linking"]["qbo_connections"] = ["qbo_oms_pro", "qbo_oms_pro"]
    with pytest.raises(config.ConfigError, match="names \\['qbo_oms_pro'\\] more than once"):
        config.load(write(tmp_path, document))
