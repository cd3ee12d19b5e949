"""The README and docs/: every relative link reaches a file, and every #anchor a heading.

The README is the front page and the reference lives in docs/, so a moved section or a renamed
heading must not leave a link pointing nowhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")
CODE_SPAN = re.compile(r"`[^`]*`")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced and indented code, with inline code spans removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced or line.startswith("    ") and not line.lstrip().startswith(("-", "|")):
            continue
        lines.append(CODE_SPAN.sub("", line))
    return lines


def links(page: Path) -> list[str]:
    return [m.group(1) for line in prose_lines(page.read_text()) for m in LINK.finditer(line)]


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to dashes, repeats numbered."""
    seen: dict[str, int] = {}
    ids = set()
    fenced = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        if fenced or not re.match(r"^#{1,6} ", line):
            continue
        title = line.lstrip("#").strip().lower()
        slug = re.sub(r"[^\w\- ]", "", title).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        ids.add(slug if n == 0 else f"{slug}-{n}")
    return ids


def test_anchor_ids_follow_github() -> None:
    page = ROOT / "docs" / "kubernetes.md"
    assert "clusters-and-rbac-kubernetes" in anchors(page)
    assert "lanyard-login-kubectl-credential-plugin" in anchors(page)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_linked() -> None:
    linked = set()
    for page in PAGES:
        for target in links(page):
            path = target.partition("#")[0]
            if path and not re.match(r"^[a-z][a-z0-9+.-]*:", path):
                linked.add((page.parent / path).resolve())
    orphans = [str(p.relative_to(ROOT)) for p in PAGES[1:] if p.resolve() not in linked]
    assert not orphans, f"docs pages no page links to: {orphans}"


def test_hardening_stays_findable() -> None:
    """The security review asks for one place listing timeouts, limits, cookies and what is
    encrypted at rest; the README links to it."""
    assert "(docs/hardening.md)" in (ROOT / "README.md").read_text()
    ids = anchors(ROOT / "docs" / "hardening.md")
    for section in ("timeouts-and-connection-limits", "cookies", "secrets-at-rest"):
        assert section in ids, section


REPO_PATH = re.compile(r"`((?:src|tests|benches|charts|config|scripts|fuzz|connectors|migrations|\.ci)/[^`\s<]*)`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_repository_paths_exist(page: Path) -> None:
    """A file the docs name as `src/...` or `tests/...` is still there (code moves; docs follow)."""
    missing = sorted({m for m in REPO_PATH.findall(page.read_text()) if not (ROOT / m).exists()})
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"
