"""The Integrations page as HTML: every figure where on-call looks for it, names escaped, no secret, no made-up
number."""
from __future__ import annotations

import datetime as dt
import re

from console import page, scopes
from notifiers import runbook

H = dt.timedelta(hours=1)
M = dt.timedelta(minutes=1)
D = dt.timedelta(days=1)
TF = "trustfile_sync"


def render(seed) -> str:
    seed.conn.commit()
    return page.render(scopes.overview(seed.conn, now=seed.now))


def row_of(html: str, scope: str) -> str:
    match = re.search(rf'<tr[^>]*data-scope="{re.escape(scope)}"[^>]*>(.*?)</tr>', html, re.S)
    assert match, f"no row for {scope}"
    return match.group(1)


def test_a_failed_scope_shows_its_summary_runbook_link_quarantine_and_expiry(seed):
    seed.connection("c-acme", company_name="Acme Inc.")
    seed.run(TF, "c-acme", "success", ago=5 * H)
    seed.run(TF, "c-acme", "failed", ago=H, error="VendorApiError: QuickBooks Online answered 503\nTraceback")
    seed.quarantine(TF, "c-acme", 4)
    seed.credential("qbo:1", integration="qbo", scope="c-acme", name="QuickBooks refresh token, Acme",
                    expires_in=5 * D + H)

    html = render(seed)
    row = row_of(html, "c-acme")

    assert "Acme Inc." in row and "c-acme" in row
    assert "failed" in row
    assert "VendorApiError: QuickBooks Online answered 503" in row and "Traceback" not in row
    link = runbook.docs_url("integrations/trustfile.md", "Sync failures and what on-call does")
    assert f'href="{link}"' in row
    assert ">4<" in row
    assert "QuickBooks refresh token, Acme" in row and "in 5 days" in row
    assert "late 3 h 28 min" in row


def test_request_budgets_show_used_left_and_the_reset_under_their_integration(seed):
    from etl.request_budget import reconcile, reserve

    seed.conn.commit()
    tenant = "https://brand.itsperfect.it/api/v2"
    for _ in range(3):
        reserve(seed.conn, "itsperfect", tenant, limit=750, headroom=30, now=seed.now)
    resets = seed.now.replace(minute=0, second=0, microsecond=0) + H
    reconcile(seed.conn, "itsperfect", tenant, remaining=700, resets_at=resets, now=seed.now)

    html = render(seed)
    section = re.search(r'<section class="integration" id="itsperfect">(.*?)</section>', html, re.S)
    assert section, "the budget's integration has a section even before it has a scope"
    row = re.search(rf'<tr[^>]*data-budget="{re.escape(tenant)}"[^>]*>(.*?)</tr>', section.group(1), re.S).group(1)
    cells = [re.sub(r"<[^>]+>", " ", c).split() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[1][:3] == ["50", "/", "720"]        # the vendor counted 50 (its own calls too), 720 allowed
    assert cells[2] == ["670"]
    assert f"{resets:%H:%M}" in " ".join(cells[3]) and "vendor" in " ".join(cells[3])
    assert "700 remaining" in " ".join(cells[4])


def test_the_trackvia_budget_shows_under_oms_pro(seed):
    from etl.request_budget import reserve

    seed.conn.commit()
    reserve(seed.conn, "trackvia", "https://go.trackvia.com", limit=5000, headroom=50, now=seed.now)

    html = render(seed)
    section = re.search(r'<section class="integration" id="oms">(.*?)</section>', html, re.S)
    assert section and 'data-budget="https://go.trackvia.com"' in section.group(1)
    assert 'id="trackvia"' not in html


def test_deferred_shows_the_time_it_runs_next(seed):
    next_run = seed.now.replace(minute=0) + H
    seed.connection("c-1", company_name="Acme", next_sync_at=next_run)
    seed.run(TF, "c-1", "success", ago=10 * M)

    assert f"deferred until {next_run:%H:%M}" in row_of(render(seed), "c-1")


def test_names_from_the_data_are_escaped_and_no_secret_reaches_the_page(seed):
    seed.connection("c-x", company_name='<script>alert("x")</script>', secret=b"SECRET-TOKEN-BYTES")
    seed.run(TF, "c-x", "failed", ago=H, error="<img src=x onerror=alert(1)> failed")

    html = render(seed)

    assert "<script>alert" not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "SECRET-TOKEN-BYTES" not in html


def test_the_headline_counts_problems_and_names_the_next_expiry(seed):
    seed.connection("c-1", company_name="Broken")
    seed.run(TF, "c-1", "failed", ago=H, error="boom")
    seed.connection("c-2", company_name="Fine")
    seed.run(TF, "c-2", "success", ago=10 * M)
    seed.credential("airflow:trustfile_default", integration="trustfile", name="TrustFile API token",
                    expires_in=3 * D + H)

    html = render(seed)
    headline = re.sub(r"<[^>]+>", "", re.search(r'<section class="headline">(.*?)</section>', html, re.S).group(1))

    assert "1 failed" in headline and "2 scopes" in headline
    assert "TrustFile API token" in headline and "in 3 days" in headline


def test_links_to_the_docs_served_beside_the_page(seed):
    html = render(seed)

    assert 'href="docs/integrations-page.md"' in html


def test_a_waiting_scope_says_why(seed):
    seed.connection("c-1", company_name="Harbor Coffee", authorized=False)

    row = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row_of(render(seed), "c-1")))

    assert "waiting waiting for authorization at QuickBooks Online" in row
