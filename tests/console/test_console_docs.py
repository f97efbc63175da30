"""docs/ served as HTML: every heading has the id an alert's runbook link (notifiers.runbook.docs_url) points
to, only files under docs/ are reachable, raw HTML in a page is not passed through."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from console import docs, scopes
from notifiers import runbook

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))


def headings(text: str) -> list[str]:
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    return [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]


@pytest.mark.parametrize("path", PAGES)
def test_every_heading_is_where_docs_url_points(path):
    source = (ROOT / "docs" / path).read_text()

    html = docs.render_page(docs.DOCS_ROOT, path).html

    ids = set(re.findall(r'<h[1-6] id="([^"]+)"', html))
    for heading in headings(source):
        assert runbook.docs_url(path, heading).split("#", 1)[1] in ids, heading


def test_the_title_is_the_first_heading():
    assert docs.render_page(docs.DOCS_ROOT, "runbook.md").title == "Runbook"


def test_repeated_headings_get_numbered_ids_as_github_does(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\n## Failures\n\ntext\n\n## Failures\n\n## Failures\n")

    html = docs.render_page(tmp_path, "a.md").html

    assert re.findall(r'id="(failures[^"]*)"', html) == ["failures", "failures-1", "failures-2"]


def test_tables_render_and_raw_html_is_escaped(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n<script>alert(1)</script>\n")

    html = docs.render_page(tmp_path, "a.md").html

    assert "<table>" in html and "<td>1</td>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html


@pytest.mark.parametrize("path", [
    "../pyproject.toml", "../../etc/passwd", "/etc/passwd", "integrations/../../README.md", "..", "",
    "runbook.md/", "./runbook.md\x00.png", "integrations\\..\\..\\README.md", ".hidden.md", "notes.txt",
])
def test_only_pages_and_images_under_docs_are_found(tmp_path, path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "runbook.md").write_text("# R\n")
    (tmp_path / "docs" / ".hidden.md").write_text("# H\n")
    (tmp_path / "docs" / "notes.txt").write_text("n")
    (tmp_path / "README.md").write_text("# outside\n")

    assert docs.find(tmp_path / "docs", path) is None


def test_a_symlink_out_of_docs_is_not_followed(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "secret.md").write_text("# outside\n")
    (tmp_path / "docs" / "link.md").symlink_to(tmp_path / "secret.md")

    assert docs.find(tmp_path / "docs", "link.md") is None


def test_pages_and_images_are_found(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "shot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "a.md").write_text("# A\n")

    assert docs.find(tmp_path, "images/shot.png") == (tmp_path / "images" / "shot.png", "image/png")
    assert docs.find(tmp_path, "a.md") == (tmp_path / "a.md", "text/markdown")


def test_the_index_lists_every_page():
    html = docs.render_index(docs.DOCS_ROOT).html

    for path in PAGES:
        assert f'href="{path}"' in html


@pytest.mark.parametrize("pipeline", sorted(scopes.PIPELINES))
def test_each_pipelines_runbook_link_lands_on_a_heading(pipeline):
    path, heading = scopes.PIPELINES[pipeline].runbook

    html = docs.render_page(docs.DOCS_ROOT, path).html

    assert f'id="{runbook.docs_url(path, heading).split("#", 1)[1]}"' in html
