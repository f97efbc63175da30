"""Sweep rules, pure: parsing with problems named by key, conditions over TrackVia's string-typed values,
templates, the check against a view's structure, and value comparison by field type."""
from __future__ import annotations

import pytest

from integrations.oms.sweep_rules import check_rule, parse_sweeps, same_value
from sandbox import trackvia as tv

TICKETS = tv.STRUCTURES["Tickets"]
KINDS = {f["name"]: f["type"] for f in TICKETS}


def rule(where: list, set_: dict, view: str = "Tickets by Updated"):
    problems: list[str] = []
    rules = parse_sweeps({"r": {"description": "d", "view": view, "where": where, "set": set_}}, "sweeps", problems)
    assert problems == []
    return rules["r"]


def problems_of(document) -> list[str]:
    problems: list[str] = []
    parse_sweeps(document, "sweeps", problems)
    return problems


@pytest.mark.parametrize("condition, record, holds", [
    ({"field": "Status", "equals": "Cancelled"}, {"Status": "Cancelled"}, True),
    ({"field": "Status", "equals": "Cancelled"}, {"Status": "Open"}, False),
    ({"field": "Status", "not_equals": "Cancelled"}, {"Status": None}, True),
    ({"field": "Amount Paid", "equals": 12.5}, {"Amount Paid": "12.50"}, True),          # numbers by value
    ({"field": "Amount Paid", "greater_than": 100}, {"Amount Paid": "99.99"}, False),
    ({"field": "Amount Paid", "greater_than": 100}, {"Amount Paid": "1000.00"}, True),   # not as text ("1" < "9")
    ({"field": "Amount Paid", "greater_than": 100}, {"Amount Paid": None}, False),      # empty compares to nothing
    ({"field": "Amount Paid", "greater_than": "many"}, {"Amount Paid": "12.00"}, False),  # not a number: never
    ({"field": "QBO Invoice Number", "equals": "IN-0141"}, {"QBO Invoice Number": "IN-141"}, False),
    ({"field": "QBO Payment IDs", "equals": "02134"}, {"QBO Payment IDs": "2134"}, False),   # text is text
    ({"field": "Completed Date", "equals": "2025-03-04T23:00:00+00:00"}, {"Completed Date": "2025-03-04"}, True),
    ({"field": "Status Changed", "less_than": "2025-06-01"}, {"Status Changed": "2025-05-31T23:00:00+00:00"}, True),
    ({"field": "Status Changed", "less_than": "2025-06-01"}, {"Status Changed": "2025-06-01T00:00:01+00:00"}, False),
    ({"field": "Priority", "in": ["Low", "Normal"]}, {"Priority": "Normal"}, True),
    ({"field": "Priority", "not_in": ["Low", "Normal"]}, {"Priority": "Normal"}, False),
    ({"field": "Region", "empty": True}, {"Region": ""}, True),
    ({"field": "Region", "empty": True}, {}, True),
    ({"field": "Region", "empty": False}, {"Region": "North"}, True),
    ({"field": "Amount Paid", "equals": {"field": "Invoice Total"}}, {"Amount Paid": "10.0", "Invoice Total": "10"},
     True),
    ({"field": "Amount Paid", "less_than": {"field": "Invoice Total"}}, {"Amount Paid": "5", "Invoice Total": "10"},
     True),
])
def test_conditions(condition, record, holds):
    assert rule([condition], {"field": "Priority", "value": "Low"}).matches(record, KINDS) is holds


def test_all_conditions_must_hold():
    r = rule([{"field": "Status", "equals": "Cancelled"}, {"field": "Priority", "not_equals": "Low"}],
             {"field": "Priority", "value": "Low"})
    assert r.matches({"Status": "Cancelled", "Priority": "High"}, KINDS)
    assert not r.matches({"Status": "Cancelled", "Priority": "Low"}, KINDS)
    assert not r.matches({"Status": "Open", "Priority": "High"}, KINDS)
    assert r.reads == ("Status", "Priority")


@pytest.mark.parametrize("template, record, target", [
    ("{Status Changed}", {"Status Changed": "2025-03-04T05:06:07+00:00"}, "2025-03-04T05:06:07+00:00"),
    ("{Ticket Number} / {Region}", {"Ticket Number": "T-00001", "Region": "North"}, "T-00001 / North"),
    ("{Ticket Number} / {Region}", {"Ticket Number": "T-00001", "Region": None}, "T-00001 / "),
    ("{{literal}} {Region}", {"Region": "East"}, "{literal} East"),
    ("{Region}", {"Region": ""}, None),                 # renders to nothing: empties the field
])
def test_templates(template, record, target):
    assert rule([{"field": "Status", "empty": False}], {"field": "Priority", "template": template}).set.target(
        record) == target


def test_a_literal_value_and_null():
    assert rule([{"field": "Status", "empty": False}], {"field": "Priority", "value": 3}).set.target({}) == "3"
    assert rule([{"field": "Status", "empty": False}], {"field": "Priority", "value": None}).set.target({}) is None
    assert rule([{"field": "Status", "empty": "false"}], {"field": "Priority", "value": ""}).set.target({}) is None


@pytest.mark.parametrize("document, expected", [
    ({"Bad-Name": {}}, "sweep name 'Bad-Name'"),
    ({"r": "text"}, "'sweeps.r' must be a mapping"),
    ({"r": {"view": "V", "where": [{"field": "A", "empty": True}], "set": {"field": "B", "value": 1}}},
     "'sweeps.r.description' must be non-empty text"),
    ({"r": {"description": "d", "view": "V", "where": [], "set": {"field": "B", "value": 1}}},
     "'sweeps.r.where' must be a non-empty list"),
    ({"r": {"description": "d", "view": "V", "where": [{"field": "A", "like": "x"}], "set": {"field": "B",
                                                                                               "value": 1}}},
     "'sweeps.r.where[0]' must have exactly one operator"),
    ({"r": {"description": "d", "view": "V", "where": [{"field": "A", "in": "x"}], "set": {"field": "B",
                                                                                             "value": 1}}},
     "'sweeps.r.where[0].in' must be a non-empty list"),
    ({"r": {"description": "d", "view": "V", "where": [{"field": "A", "empty": "yes"}],
            "set": {"field": "B", "value": 1}}}, "'sweeps.r.where[0].empty' must be true or false"),
    ({"r": {"description": "d", "view": "V", "where": [{"field": "A", "equals": {"sql": "1=1"}}],
            "set": {"field": "B", "value": 1}}}, "'sweeps.r.where[0].equals' as a mapping must be {field:"),
    ({"r": {"description": "d", "view": "V", "where": [{"field": "A", "empty": True}],
            "set": {"field": "B", "value": 1, "template": "{A}"}}}, "exactly one of value, template"),
    ({"r": {"description": "d", "view": "V", "where": [{"field": "A", "empty": True}],
            "set": {"field": "B", "template": "{A"}}}, "every { opens a {Field Name} placeholder"),
    ({"r": {"description": "d", "view": "V", "where": [{"field": "A", "empty": True}],
            "set": {"field": "B", "value": [1]}}}, "'sweeps.r.set.value' must be a single value"),
    ({"r": {"description": "d", "view": "V", "where": [{"field": "A", "empty": True}],
            "set": {"field": "B", "value": 1}, "code": "x"}}, "unknown key sweeps.r.'code'"),
])
def test_malformed_rules_are_named(document, expected):
    assert any(expected in problem for problem in problems_of(document)), problems_of(document)


def test_check_against_the_structure_names_each_gap():
    r = rule([{"field": "Status", "equals": "Canceled"}, {"field": "Colour", "empty": True}],
             {"field": "Record ID", "template": "{Region} {Shade}"})
    problems = check_rule(r, TICKETS, required=("Updated",))
    assert "no field 'Colour'" in problems and "no field 'Shade'" in problems
    assert "field 'Record ID' is read-only to the API user (canUpdate false)" in problems
    assert any("'Canceled' is not a choice of drop-down 'Status'" in p and "Cancelled" in p for p in problems)
    assert check_rule(rule([{"field": "Status", "equals": "Cancelled"}], {"field": "Priority", "value": "Low"}),
                      TICKETS, required=("Updated",)) == []
    assert "no field 'Updated'" in check_rule(
        rule([{"field": "Status", "equals": "Cancelled"}], {"field": "Priority", "value": "Low"}),
        [f for f in TICKETS if f["name"] != "Updated"], required=("Updated",))


@pytest.mark.parametrize("kind, current, wanted, same", [
    ("currency", "12.50", "12.5", True),
    ("currency", "12.50", "12.51", False),
    ("date", "2025-03-04", "2025-03-04T05:06:07+00:00", True),
    ("datetime", "2025-03-04T05:06:07+00:00", "2025-03-04T06:06:07+01:00", True),
    ("dropDown", "Low", "Low", True),
    ("dropDown", "", None, True),
    ("dropDown", None, "Low", False),
    ("shortAnswer", "a", "A", False),
    ("shortAnswer", "02134", "2134", False),
    ("paragraph", "1E3", "1000", False),
    ("number", "1E3", "1000", True),
])
def test_same_value_by_field_type(kind, current, wanted, same):
    assert same_value(kind, current, wanted) is same


def test_the_fingerprint_follows_the_declaration():
    a = rule([{"field": "Status", "equals": "Cancelled"}], {"field": "Priority", "value": "Low"})
    b = rule([{"field": "Status", "equals": "Cancelled"}], {"field": "Priority", "value": "Low"})
    c = rule([{"field": "Status", "equals": "Cancelled"}], {"field": "Priority", "value": "Normal"})
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_only_fields_that_read_back_as_written_may_be_set_and_only_single_values_compared():
    structure = [*TICKETS, {"name": "Tags", "type": "checkbox", "canUpdate": True}]
    relationship = rule([{"field": "Status", "equals": "Cancelled"}], {"field": "Customer", "value": "7"})
    assert any("field 'Customer' is a relationship field, which a sweep cannot set" in p
               for p in check_rule(relationship, structure))
    checkbox = rule([{"field": "Tags", "empty": True}], {"field": "Priority", "value": "Low"})
    assert any("field 'Tags' is a checkbox field, which a condition cannot compare" in p
               for p in check_rule(checkbox, structure))
    by_customer = rule([{"field": "Customer", "equals": "Acme Fire Protection"}], {"field": "Priority", "value": "Low"})
    assert check_rule(by_customer, structure) == []
