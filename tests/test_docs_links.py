"""Every relative link and #anchor in the README and docs/*.md resolves.

Anchors follow GitHub's rules for headings: the heading's rendered text (no backticks,
emphasis or link targets), lower-cased, every character that is not a letter, digit, mark,
``_``, ``-`` or space dropped, spaces turned into ``-``; a repeated heading gets ``-1``,
``-2`` … A link to a file must name one that exists; a link with an anchor into a Markdown
file must name one of that file's headings. Links inside code (fenced blocks, backticks) are
not links. Absolute URLs (``https:``, ``mailto:``) are not checked: that needs a network.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
#: ``[text](target)`` and ``![alt](target)``; the text may run over lines and hold one level
#: of brackets; the target ends at the first space (a title may follow) or the closing
#: parenthesis.
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose(text: str) -> str:
    """``text`` with fenced code blocks blanked and inline code removed, lines kept in place."""
    out, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else _INLINE_CODE.sub("", line))
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's Markdown text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = text.replace("`", "")
    text = re.sub(r"(\*\*|__|\*|~~)", "", text)  # emphasis markers (not a word's _)
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    kept = "".join(ch for ch in text.lower()
                   if ch in " -_" or unicodedata.category(ch)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text("utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link in a Markdown file's prose."""
    prose = _prose(path.read_text("utf-8"))
    return [(prose.count("\n", 0, match.start()) + 1, match.group(1))
            for match in _LINK.finditer(prose)]


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(path: Path) -> list[str]:
    """One line per link of ``path`` whose file or anchor does not exist."""
    problems = []
    for number, target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: …
            continue
        file_part, _, anchor = target.partition("#")
        where = f"{_name(path)}:{number}: {target!r}"
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{where}: no file {_name(linked)}")
        elif anchor and linked.suffix != ".md":
            problems.append(f"{where}: an anchor into a file that is not Markdown")
        elif anchor and unquote(anchor) not in anchors(linked):
            problems.append(f"{where}: no heading with the anchor #{anchor} in {_name(linked)}")
    return problems


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(path: Path) -> None:
    assert broken_links(path) == []


def test_the_checker_finds_links_and_follows_githubs_anchor_rules(tmp_path: Path) -> None:
    assert slug("Speed: `cityagent bench --alerting`") == "speed-cityagent-bench---alerting"
    assert slug("How it runs in the worker (`streams/alerting.py`)") == \
        "how-it-runs-in-the-worker-streamsalertingpy"
    assert slug("Who am I: `GET /v1/me`") == "who-am-i-get-v1me"
    assert slug("一屏观全省 the **dashboard**") == "一屏观全省-the-dashboard"
    assert slug("snake_case [link](x.md) end") == "snake_case-link-end"
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Part\n\n## Part\n\nSee [it](#part-1), [that](#nothing), "
                    "[gone](missing.md), `[code](nowhere.md)`, [web](https://example.com), [two\n"
                    "lines](#title).\n"
                    "```\n[fenced](nowhere.md)\n```\n", "utf-8")
    assert anchors(page) == {"title", "part", "part-1"}
    assert [target for _, target in links(page)] == [
        "#part-1", "#nothing", "missing.md", "https://example.com", "#title"]
    assert [problem.split(": ", 2)[2] for problem in broken_links(page)] == [
        "no heading with the anchor #nothing in " + str(page),
        "no file " + str(tmp_path / "missing.md")]
