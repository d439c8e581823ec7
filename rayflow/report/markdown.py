"""MODEL_CARD.md as HTML inside report.html: the card is markdown written by rayflow itself
(student/card.py), so the few forms it uses are enough (headings, paragraphs, pipe tables, `-`
lists, fenced code, **bold** and `code`), with no new dependency. Everything is escaped first: the
card holds names a user chose (config, classes), which must never become markup."""

from __future__ import annotations

import html
import re

_BULLET = re.compile(r"^\s*[-*] ")


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(lines: list[str]) -> str:
    head, body = _cells(lines[0]), [_cells(x) for x in lines[1:] if not re.fullmatch(r"[\s|:-]+", x)]
    th = "".join(f"<th>{_inline(c)}</th>" for c in head)
    rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{th}</tr>{rows}</table>"


def to_html(md: str) -> str:
    """The markdown as HTML blocks."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j]), quote=False) + "</code></pre>")
            i = j + 1
        elif m := re.match(r"(#{1,6})\s+(.*)", line):
            level = min(len(m.group(1)) + 2, 6)  # the card's # sits under the report's <h2>
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
        else:
            kind = _kind(line)
            j = i
            while j < len(lines) and lines[j].strip() and not lines[j].startswith(("#", "```")) and \
                    _kind(lines[j]) == kind:
                j += 1
            block = lines[i:j]
            if kind == "table":
                out.append(_table(block))
            elif kind == "list":
                out.append("<ul>" + "".join(f"<li>{_inline(_BULLET.sub('', x))}</li>" for x in block) + "</ul>")
            else:
                out.append("<p>" + "<br>".join(_inline(x) for x in block) + "</p>")
            i = j
    return "\n".join(out)


def _kind(line: str) -> str:
    return "table" if line.lstrip().startswith("|") else "list" if _BULLET.match(line) else "p"
