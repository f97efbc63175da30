"""ServiceTradeHost against the sandbox over real HTTP: windows read once, sessions ended, every invoice mapped."""
from __future__ import annotations

import datetime as dt
import json
import logging
from decimal import Decimal
from urllib.parse import parse_qs

import pytest

from hooks.servicetrade import PAGE_LIMIT, ServiceTradeHook
from integrations.trustfile.hosts.servicetrade import ServiceTradeHost
from integrations.trustfile.model import Address, Unreconciled
from sandbox import servicetrade as st

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
SINCE, UNTIL = EPOCH + dt.timedelta(seconds=st.T0), EPOCH + dt.timedelta(seconds=st.T0) + dt.timedelta(days=60)
COMPANY = Address(line1="1 Main St", city="Sacramento", state="CA", zip="95814")


def at(seconds: int) -> dt.datetime:
    return EPOCH + dt.timedelta(seconds=seconds)


@pytest.fixture
def hook(sandbox, monkeypatch) -> ServiceTradeHook:
    monkeypatch.setenv("AIRFLOW_CONN_SERVICETRADE_HOST_TEST", json.dumps(
        {"conn_type": "servicetrade", "host": f"{sandbox.url}/servicetrade/api", "login": st.USERNAME,
         "password": st.PASSWORD}))
    monkeypatch.setattr(ServiceTradeHook, "backoff_initial", 0.01)
    return ServiceTradeHook("servicetrade_host_test")


@pytest.fixture
def host(hook) -> ServiceTradeHost:
    return ServiceTradeHost(hook, account="acme-fire")


@pytest.fixture
def invoices(hook, sandbox) -> list[dict]:
    """Every invoice in the sandbox, read plainly (no window), as the oracle; its session is not counted."""
    with hook.transaction():
        everything = list(hook.list_invoices(updated_after=0))
    sandbox.reset()
    return everything


def sales_ids(invoices: list[dict], since: dt.datetime, until: dt.datetime) -> set[str]:
    return {str(i["id"]) for i in invoices
            if i["type"] != "vendorbill" and since <= at(i["updated"]) < until}


def list_requests(sandbox) -> list[dict]:
    return [parse_qs(r["query"]) for r in sandbox.requests("servicetrade") if r["path"].endswith("/api/invoice")]


def test_every_sales_invoice_in_the_window_once_in_one_session(host, invoices, sandbox):
    ids = [d.source_id for d in host.documents(SINCE, UNTIL)]
    assert len(ids) == len(set(ids)) == len(sales_ids(invoices, SINCE, UNTIL)) > 40
    assert set(ids) == sales_ids(invoices, SINCE, UNTIL)
    assert any(i["type"] == "vendorbill" for i in invoices)          # there were purchases to leave out
    state = sandbox.state("servicetrade")
    assert (state["open_sessions"], state["sessions_opened"]) == (0, 1)
    assert [q["updatedBefore"] for q in list_requests(sandbox)] == [[str(st.T0 + 60 * 86400 - 1)]]


def test_since_is_inclusive_and_until_exclusive_to_the_second(host, invoices):
    moments = sorted({i["updated"] for i in invoices if i["type"] == "invoice"})
    low, high = moments[5], moments[15]
    windows = [(at(low), at(high)),                                       # low in, high out
               (at(low) + dt.timedelta(milliseconds=500),                     # low out, high in
                at(high) + dt.timedelta(milliseconds=500))]
    for since, until in windows:
        documents = list(host.documents(since, until))
        assert {d.source_id for d in documents} == sales_ids(invoices, since, until)
        assert all(since <= d.updated_at < until for d in documents)
    assert str(next(i["id"] for i in invoices if i["updated"] == low)) not in sales_ids(invoices, *windows[1])


def test_an_edit_during_a_multi_page_read_hides_no_other_invoice(host, hook, invoices, sandbox, monkeypatch):
    monkeypatch.setitem(PAGE_LIMIT, "invoice", 5)
    expected = sales_ids(invoices, SINCE, UNTIL)
    documents = host.documents(SINCE, UNTIL)
    first = next(documents)
    other = ServiceTradeHook(hook.conn_id)      # someone in the office edits the invoice just read
    with other.transaction():
        edited = other.call("PUT", f"/invoice/{first.source_id}", json={"notes": "customer PO added"})["data"]
    assert at(edited["updated"]) >= UNTIL       # it left the window, shifting every later row one place up
    ids = [first.source_id] + [d.source_id for d in documents]
    assert len(ids) == len(set(ids))
    assert set(ids) == expected
    assert max(int(q["page"][0]) for q in list_requests(sandbox)) == 2   # a page 2 is only ever a peek
    assert sandbox.state("servicetrade")["open_sessions"] == 0


def test_a_second_holding_more_than_a_page_is_read_page_by_page(host, invoices, monkeypatch, caplog):
    monkeypatch.setitem(PAGE_LIMIT, "invoice", 2)
    busy = next(second for second in {i["updated"] for i in invoices}
                if sum(i["updated"] == second and i["type"] == "invoice" for i in invoices) > 2)
    with caplog.at_level(logging.WARNING):
        ids = [d.source_id for d in host.documents(at(busy), at(busy + 1))]
    assert sorted(ids) == sorted(sales_ids(invoices, at(busy), at(busy + 1))) and len(ids) > 2
    assert "read page by page" in caplog.text


def test_the_session_ends_when_the_reader_stops_early_and_none_opens_for_an_empty_window(host, sandbox):
    documents = host.documents(SINCE, UNTIL)
    next(documents)
    assert sandbox.state("servicetrade")["open_sessions"] == 1
    documents.close()
    assert sandbox.state("servicetrade")["open_sessions"] == 0
    assert list(host.documents(UNTIL, UNTIL)) == [] and list(host.documents(
        SINCE + dt.timedelta(milliseconds=200), SINCE + dt.timedelta(milliseconds=700))) == []
    assert sandbox.state("servicetrade")["sessions_opened"] == 1


def test_every_sandbox_invoice_maps_or_is_deliberately_unreconciled(host, invoices):
    def adds_up(record: dict) -> bool:
        items = sum(Decimal(str(item["totalPrice"])) for item in record["items"])
        return items + Decimal(str(record["taxAmount"])) == Decimal(str(record["totalPrice"]))

    by_id = {str(i["id"]): i for i in invoices}
    mapped, unreconciled = {}, set()
    for document in host.documents(SINCE, UNTIL):
        try:
            mapped[document.source_id] = host.to_transaction(document, fallback_address=COMPANY)
        except Unreconciled as exc:
            assert "difference" in str(exc)
            unreconciled.add(document.source_id)
    active = {k for k, r in by_id.items() if r["type"] == "invoice" and r["status"] != "void"}
    assert unreconciled == {k for k in active if not adds_up(by_id[k])} and len(unreconciled) == 1
    assert set(mapped) | unreconciled == sales_ids(invoices, SINCE, UNTIL)

    def where(predicate) -> set[str]:
        return {k for k, t in mapped.items() if predicate(t)}

    assert where(lambda t: t.status == "voided") == {k for k, r in by_id.items() if r["status"] == "void"} != set()
    assert where(lambda t: t.kind == "refund" and t.status == "active") == {
        k for k in active - unreconciled if by_id[k]["totalPrice"] < 0} != set()
    assert where(lambda t: t.review_required) == {
        k for k in mapped if not (by_id[k]["location"]["address"]["state"]
                                  and by_id[k]["location"]["address"]["postalCode"])} != set()
    for key, t in mapped.items():
        assert t.computed_total == t.source_total and t.ship_to.complete
        assert t.source_updated_at == at(by_id[key]["updated"])


def test_a_window_with_a_limit_ends_after_a_whole_part_and_the_next_one_reads_on(host, invoices, monkeypatch):
    monkeypatch.setitem(PAGE_LIMIT, "invoice", 10)            # parts of at most 10 invoices
    first = [d.source_id for d in host.documents(SINCE, UNTIL, limit=15)]
    end = host.window_end
    assert SINCE < end < UNTIL and 15 <= len(first) < len(sales_ids(invoices, SINCE, UNTIL))
    assert set(first) == sales_ids(invoices, SINCE, end)      # everything before the end, nothing after it
    rest = [d.source_id for d in host.documents(end, UNTIL)]
    assert set(first) | set(rest) == sales_ids(invoices, SINCE, UNTIL) and not set(first) & set(rest)
