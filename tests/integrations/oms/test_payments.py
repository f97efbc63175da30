"""QBO payment linking end to end against the sandbox's QBO company and OMS-Pro app and a real PostgreSQL:
each linked payment lands on its ticket once, partial payments sum, a voided or deleted payment reverses,
an unmatched payment waits in review until its ticket appears, and a rerun sends no PUT."""
from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from decimal import Decimal

import pytest
from cryptography.fernet import Fernet

from hooks.qbo import QboHook
from hooks.trackvia import TrackViaHook
from integrations.oms import config, payments
from sandbox import qbo as qbo_sandbox

REALM = qbo_sandbox.REALMS[0]


@pytest.fixture
def hooks(sandbox, db_url, conn, trackvia_connection, monkeypatch):
    """(QboHook, TrackViaHook) on the sandbox, the company's initial refresh token as the QBO tests set it."""
    conn.execute("TRUNCATE oms.payment_links, oms.payment_reviews, etl.oauth_tokens, etl.request_budgets, "
                 "etl.watermarks")
    conn.commit()
    monkeypatch.setenv("INTEGRATIONS_FERNET_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("AIRFLOW_CONN_QBO_DEFAULT", json.dumps(qbo_sandbox.company_connection(sandbox.url, REALM)))
    trackvia_connection()
    return QboHook(conninfo=db_url), TrackViaHook(conninfo=db_url)


def queries_sent(sandbox) -> list[str]:
    """The text of every query the sandbox's QBO has answered (its request log keeps no bodies)."""
    return [text for _, text in sandbox.state("qbo")["queries"]]


def lookups(queries: list[str], entity: str) -> list[list[str]]:
    """The Ids each `SELECT * FROM <entity> WHERE Id IN (...)` query asked for."""
    return [re.findall(r"'([^']*)'", re.search(r"Id IN \((.*?)\)", q)[1]) for q in queries
            if re.search(rf"\bFROM {entity}\b", q) and " Id IN (" in q]


def past_cdcs_reach(conn) -> None:
    """A long pause: the watermark 40 days old, beyond what CDC answers (the sandbox refuses it as QBO does)."""
    conn.execute("UPDATE etl.watermarks SET ts_value = now() - interval '40 days' WHERE pipeline = %s",
                 (payments.PIPELINE,))
    conn.commit()


def held_payments(conn) -> set[str]:
    return {payment for (payment,) in conn.execute(
        "SELECT DISTINCT payment_id FROM oms.payment_links WHERE realm = %s AND NOT deleted", (REALM,))}


def run(conn, db_url, n: int) -> payments.LinkReport:
    """A run with hooks of its own, as each DAG run has."""
    return payments.link_payments(conn, QboHook(conninfo=db_url), TrackViaHook(conninfo=db_url), config.load(),
                                  realm=REALM, run_id=f"test-{n}")


def tickets(sandbox) -> dict[str, dict]:
    return {r["QBO Invoice Number"]: r for r in sandbox.state("trackvia")["records"]["Tickets"]
            if r["QBO Invoice Number"]}


def puts(sandbox) -> int:
    return sandbox.state("trackvia")["put_requests"]


def assert_tickets_match_qbo(qbo: QboHook, sandbox) -> int:
    """Every ticket's payment fields are what QBO's payments and invoice balances say; how many are paid."""
    invoices = {i["Id"]: i for i in qbo.query("Invoice")}
    parts: dict[str, list[tuple[str, Decimal, str]]] = defaultdict(list)
    for payment in qbo.query("Payment"):
        if payment.get("PrivateNote") == "Voided":
            continue
        for line in payment["Line"]:
            for link in line["LinkedTxn"]:
                parts[link["TxnId"]].append((payment["Id"], Decimal(str(line["Amount"])), payment["TxnDate"]))
    with_payments = 0
    for invoice in invoices.values():
        ticket = tickets(sandbox).get(invoice["DocNumber"])
        if ticket is None:
            continue
        linked = parts.get(invoice["Id"], [])
        if linked:
            with_payments += 1
            assert Decimal(ticket["Amount Paid"]) == sum(amount for _, amount, _ in linked)
            assert ticket["QBO Payment IDs"] == ", ".join(sorted((p for p, _, _ in linked), key=int))
            assert ticket["Payment Date"] == max(date for _, _, date in linked)
        else:
            assert (ticket["Amount Paid"], ticket["QBO Payment IDs"], ticket["Payment Date"]) == (None, None, None)
        assert ticket["Paid"] == ("Yes" if invoice["Balance"] == 0 else "No"), invoice["DocNumber"]
    return with_payments


def test_every_linked_payment_lands_on_its_ticket_once_and_a_rerun_sends_no_put(hooks, sandbox, conn, db_url):
    qbo, _ = hooks
    first = run(conn, db_url, 1)
    paid = assert_tickets_match_qbo(qbo, sandbox)
    assert paid > 0 and first.tickets_updated == paid == puts(sandbox)
    put_paths = [r["path"] for r in sandbox.requests("trackvia") if r["method"] == "PUT"]
    assert len(put_paths) == len(set(put_paths))               # each ticket once
    assert first.payments_read == 40 and first.links_upserted == 40
    stored = conn.execute("SELECT count(*) FROM oms.payment_links WHERE realm = %s", (REALM,)).fetchone()[0]
    assert stored == 40

    second = run(conn, db_url, 2)
    assert puts(sandbox) == paid and second.tickets_updated == 0
    assert second.sent_to_review == 0
    assert sandbox.state("trackvia")["delete_requests"] == 0


def test_partial_payments_sum_and_a_voided_or_deleted_payment_reverses_its_part(hooks, sandbox, conn, db_url):
    qbo, _ = hooks
    run(conn, db_url, 1)
    invoice = next(i for i in qbo.query("Invoice") if i["DocNumber"] == "IN-150")   # ticketed, not yet paid
    balance = Decimal(str(invoice["Balance"]))
    assert balance == Decimal(str(invoice["TotalAmt"])) and tickets(sandbox)["IN-150"]["Paid"] == "No"
    third = (balance / 3).quantize(Decimal("0.01"))
    added = sandbox.control("qbo", add_payment=[
        {"realm": REALM, "invoice_id": invoice["Id"], "amount": float(third), "txn_date": "2026-11-20"},
        {"realm": REALM, "invoice_id": invoice["Id"], "amount": float(third), "txn_date": "2026-11-22"}],
    )["added_payments"]

    before = puts(sandbox)
    report = run(conn, db_url, 2)
    assert report.tickets_updated == 1 and puts(sandbox) == before + 1
    ticket = tickets(sandbox)["IN-150"]
    assert (Decimal(ticket["Amount Paid"]), ticket["QBO Payment IDs"]) == (2 * third, ", ".join(added))
    assert (ticket["Payment Date"], ticket["Paid"]) == ("2026-11-22", "No")

    rest = sandbox.control("qbo", add_payment=[{"realm": REALM, "invoice_id": invoice["Id"],
                                                "amount": float(balance - 2 * third), "txn_date": "2026-11-21"}],
                           )["added_payments"]
    run(conn, db_url, 3)
    ticket = tickets(sandbox)["IN-150"]
    assert (Decimal(ticket["Amount Paid"]), ticket["QBO Payment IDs"]) == (balance, ", ".join(added + rest))
    assert (ticket["Payment Date"], ticket["Paid"]) == ("2026-11-22", "Yes")   # the balance is 0
    assert_tickets_match_qbo(qbo, sandbox)

    sandbox.control("qbo", void_payment=[{"realm": REALM, "id": added[1]}])
    run(conn, db_url, 4)
    ticket = tickets(sandbox)["IN-150"]
    assert (Decimal(ticket["Amount Paid"]), ticket["QBO Payment IDs"]) == (balance - third, f"{added[0]}, {rest[0]}")
    assert (ticket["Payment Date"], ticket["Paid"]) == ("2026-11-21", "No")
    voided = conn.execute("SELECT voided, amount FROM oms.payment_links WHERE realm = %s AND payment_id = %s",
                          (REALM, added[1])).fetchone()
    assert voided == (True, Decimal("0.00"))

    sandbox.control("qbo", delete=[{"realm": REALM, "entity": "Payment", "id": payment_id}
                                   for payment_id in (added[0], rest[0])])
    report = run(conn, db_url, 5)
    assert report.payments_deleted == 2
    ticket = tickets(sandbox)["IN-150"]
    assert (ticket["Amount Paid"], ticket["QBO Payment IDs"], ticket["Payment Date"], ticket["Paid"]) == (
        None, None, None, "No")
    assert_tickets_match_qbo(qbo, sandbox)
    before = puts(sandbox)
    assert run(conn, db_url, 6).tickets_updated == 0 and puts(sandbox) == before


def test_past_the_change_feeds_30_days_a_deleted_payment_is_found_by_looking_up_the_held_payments_by_id(
        hooks, sandbox, conn, db_url):
    """A long pause: the watermark is 40 days old, beyond what CDC answers (the sandbox refuses it as QBO does);
    the run looks up the payments we hold links for by Id (one query per 100, never a listing of the company's
    payments), and the deleted one's ticket is reversed."""
    qbo, _ = hooks
    run(conn, db_url, 1)
    cdc_calls = lambda: sum(1 for r in sandbox.requests("qbo") if r["path"].endswith("/cdc"))  # noqa: E731
    within_reach = cdc_calls()
    run(conn, db_url, 2)
    assert cdc_calls() == within_reach + 1                 # within its reach, CDC tells the deletions
    linked = conn.execute("SELECT payment_id, doc_number FROM oms.payment_links WHERE realm = %s AND NOT voided "
                          "AND doc_number IS NOT NULL ORDER BY payment_id LIMIT 1", (REALM,)).fetchone()
    assert tickets(sandbox)[linked[1]]["QBO Payment IDs"]
    sandbox.control("qbo", delete=[{"realm": REALM, "entity": "Payment", "id": linked[0]}])
    past_cdcs_reach(conn)
    held = held_payments(conn)
    cdc_before, queries_before = cdc_calls(), len(queries_sent(sandbox))

    report = run(conn, db_url, 3)

    assert report.payments_deleted == 1 and report.tickets_updated == 1
    assert cdc_calls() == cdc_before
    # Every query the run sent: the changes of its window (by LastUpdatedTime), the held payments by Id
    # (ceil(held / 100) queries asking for exactly those), the touched invoices by Id; no listing.
    sent = queries_sent(sandbox)[queries_before:]
    payments_by_id, invoices_by_id = lookups(sent, "Payment"), lookups(sent, "Invoice")
    window = [q for q in sent if "MetaData.LastUpdatedTime >= " in q]
    assert len(sent) == len(window) + len(payments_by_id) + len(invoices_by_id)
    assert len(payments_by_id) == math.ceil(len(held) / 100) and sorted(sum(payments_by_id, [])) == sorted(held)
    assert linked[0] not in (tickets(sandbox)[linked[1]]["QBO Payment IDs"] or "")
    assert_tickets_match_qbo(qbo, sandbox)


def test_a_payment_without_a_ticket_waits_in_review_and_links_once_its_ticket_appears(hooks, sandbox, conn, db_url):
    qbo, _ = hooks
    invoice = next(i for i in qbo.query("Invoice") if i["DocNumber"] == "IN-177")
    added = sandbox.control("qbo", add_payment=[{"realm": REALM, "invoice_id": invoice["Id"], "amount": 12.5}]
                            )["added_payments"][0]
    first = run(conn, db_url, 1)
    reviews = conn.execute("SELECT payment_id, doc_number, reason, resolved_at FROM oms.payment_reviews "
                           "WHERE realm = %s AND invoice_id = %s", (REALM, invoice["Id"])).fetchall()
    assert added in {payment_id for payment_id, *_ in reviews}
    assert all(doc == "IN-177" and "IN-177" in reason and resolved is None for _, doc, reason, resolved in reviews)
    assert first.sent_to_review >= len(reviews)

    again = run(conn, db_url, 2)                 # retried, still no ticket: nothing new, nothing resolved
    assert (again.sent_to_review, again.resolved_from_review) == (0, 0)

    sandbox.control("trackvia", create=[{"table": "Tickets", "fields": {"QBO Invoice Number": "IN-177",
                                                                        "Paid": "No", "Status": "Open"}}])
    before = puts(sandbox)
    linked = run(conn, db_url, 3)
    assert linked.resolved_from_review == len(reviews) and puts(sandbox) == before + 1
    assert conn.execute("SELECT count(*) FROM oms.payment_reviews WHERE realm = %s AND invoice_id = %s "
                        "AND resolved_at IS NULL", (REALM, invoice["Id"])).fetchone()[0] == 0
    assert added in tickets(sandbox)["IN-177"]["QBO Payment IDs"].split(", ")
    assert_tickets_match_qbo(qbo, sandbox)
    assert run(conn, db_url, 4).tickets_updated == 0 and puts(sandbox) == before + 1


def test_a_spent_budget_is_a_wait_not_a_failure_and_the_rerun_repeats_no_put(hooks, sandbox, conn, db_url,
                                                                             trackvia_connection):
    """TrackVia's budget runs out after 2 of the 6 PUTs: the ledger row closes as a success without a watermark,
    links and watermark roll back, BudgetSpent goes on (the operator defers); the rerun sends the other 4."""
    from etl.request_budget import BudgetSpent

    qbo, _ = hooks
    trackvia_connection(hourly_limit=6, budget_headroom=1)   # 3 lookups + 2 PUTs
    conn.execute("TRUNCATE etl.run_ledger CASCADE")
    conn.commit()
    with pytest.raises(BudgetSpent):
        run(conn, db_url, 1)
    assert puts(sandbox) == 2
    assert conn.execute("SELECT status, watermark_after, rows_updated, error FROM etl.run_ledger "
                        "WHERE pipeline = %s", (payments.PIPELINE,)).fetchall() == [("success", None, 2, None)]
    assert conn.execute("SELECT count(*) FROM oms.payment_links").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM etl.watermarks WHERE pipeline = %s",
                        (payments.PIPELINE,)).fetchone()[0] == 0

    trackvia_connection()
    conn.execute("TRUNCATE etl.request_budgets")           # a new window, the default limit
    conn.commit()
    resumed = run(conn, db_url, 2)
    paid = assert_tickets_match_qbo(qbo, sandbox)
    put_paths = [r["path"] for r in sandbox.requests("trackvia") if r["method"] == "PUT"]
    assert (resumed.tickets_updated, resumed.unchanged) == (paid - 2, 2)
    assert len(put_paths) == paid == len(set(put_paths))   # no ticket PUT twice
    assert [status for (status,) in conn.execute("SELECT status FROM etl.run_ledger WHERE pipeline = %s ORDER BY id",
                                                 (payments.PIPELINE,))] == ["success", "success"]
