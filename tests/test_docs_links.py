"""Every relative link of the README, docs/ and the results reports resolves inside the
repository, and user-facing text cites the paper, not internal notes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
                *(ROOT / "results").glob("**/*.md")])
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def relative_links(text: str) -> list[str]:
    """Targets of the markdown links in `text` that are neither external nor a bare anchor."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no links
    return [t for t in LINK.findall(text) if not EXTERNAL.match(t) and not t.startswith("#")]


def test_link_pattern_finds_what_it_should():
    text = ("[a](docs/x.md) ![img](r/roc.png) [b](https://example.org) [c](#anchor) "
            "[d](../y.md#part) [e](f.md \"title\")\n```\n[f](in/code.md)\n```")
    assert relative_links(text) == ["docs/x.md", "r/roc.png", "../y.md#part", "f.md"]


def test_pages_exist():
    assert ROOT / "README.md" in PAGES and (ROOT / "docs" / "architecture.md") in PAGES
    assert len(PAGES) > 5


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(page):
    bad = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.is_relative_to(ROOT):
            bad.append(f"{target} (outside the repository)")
        elif not path.exists():
            bad.append(f"{target} (missing)")
    assert not bad, f"{page.relative_to(ROOT)}: broken links {bad}"


# a run's answers.md quotes the dataset's questions and the model's answers, not our text
USER_TEXT = [*(p for p in PAGES if p.name != "answers.md"), *(ROOT / "src").glob("**/*.py"),
             *(ROOT / "src").glob("**/*.md")]
INTERNAL = re.compile(r"\bissue \d+|\bissue's\b|PAPER\.md|\.\./shared|\bsessions?\b", re.I)


@pytest.mark.parametrize("path", USER_TEXT, ids=lambda p: str(p.relative_to(ROOT)))
def test_user_facing_text_names_no_internal_notes(path):
    if path.name == "UPSTREAM-README.md":  # a third party's file, shipped unmodified
        return
    hits = [f"{i}: {line.strip()}" for i, line in enumerate(
        path.read_text(encoding="utf-8").splitlines(), 1) if INTERNAL.search(line)]
    assert not hits, f"{path.relative_to(ROOT)} cites internal notes (cite arXiv 2603.29466): {hits}"
