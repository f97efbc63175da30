"""docs/ for people: markdown pages rendered to HTML and the images beside them, nothing else.

Each heading gets the id `notifiers.runbook.slug` makes of it (GitHub's anchors, repeated headings numbered
-1, -2...), so a runbook link built by `notifiers.runbook.docs_url` lands on its section. Raw HTML in a page is
shown as text, not passed through. A path is served only when it names a page (.md) or an image under docs/,
through no hidden file or folder, and resolves (symlinks followed) inside docs/.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from html import escape
from pathlib import Path, PurePosixPath

from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore

from notifiers.runbook import slug

DOCS_ROOT = Path(__file__).resolve().parents[2] / "docs"
MEDIA_TYPES = {".md": "text/markdown", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
               ".gif": "image/gif", ".webp": "image/webp"}


@dataclass(frozen=True)
class Document:
    title: str
    html: str


def find(root: Path, path: str) -> tuple[Path, str] | None:
    """(the file, its media type) for a page or an image under `root`, else None."""
    if not path or "\x00" in path or "\\" in path:
        return None
    parts = path.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        return None
    media_type = MEDIA_TYPES.get(PurePosixPath(path).suffix.lower())
    if media_type is None:
        return None
    base = root.resolve()
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(base) or not target.is_file():
        return None
    return target, media_type


def _heading_ids(state: StateCore) -> None:
    seen: dict[str, int] = {}
    for index, token in enumerate(state.tokens):
        if token.type == "heading_open":
            anchor = slug(state.tokens[index + 1].content)
            repeats = seen.get(anchor, 0)
            seen[anchor] = repeats + 1
            token.attrSet("id", f"{anchor}-{repeats}" if repeats else anchor)


@cache
def _markdown() -> MarkdownIt:
    renderer = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    renderer.core.ruler.push("heading_ids", _heading_ids)
    return renderer


def render_page(root: Path, path: str) -> Document:
    """The page `path` (found by `find`) as HTML; its title is its first heading."""
    text = root.joinpath(*path.split("/")).read_text(encoding="utf-8")
    tokens = _markdown().parse(text)
    title = next((tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"), path)
    return Document(title.replace("`", ""), _markdown().renderer.render(tokens, _markdown().options, {}))


def render_index(root: Path) -> Document:
    """Every page under `root`, with its title."""
    items = []
    for file in sorted(root.rglob("*.md")):
        path = file.relative_to(root).as_posix()
        if find(root, path):
            title = render_page(root, path).title
            items.append(f'<li><a href="{escape(path)}">{escape(title)}</a> <small>{escape(path)}</small></li>')
    return Document("Docs", "<h1>Docs</h1>\n<ul>\n" + "\n".join(items) + "\n</ul>\n")

