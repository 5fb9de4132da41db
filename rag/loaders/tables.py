"""Tables as Markdown: what every loader that meets a table (PDF, Word, sheets, CSV) emits.

A table becomes one Markdown table, header row first, one line per row, so that the
splitter can cut between rows and repeat the header (see ``rag.splitting``), and a
language model reads columns as columns instead of run-on text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# A row of a Markdown table as ``render_table`` writes it, and its header separator.
TABLE_ROW = re.compile(r"^\|.*\|$")
SEPARATOR_ROW = re.compile(r"^\|(?: ?:?-{3,}:? ?\|)+$")


def _cell(value: object) -> str:
    if value is None:
        return ""
    # one line per row: a cell's own line breaks and pipes would break the table
    text = " ".join(str(value).split())
    return text.replace("|", "\\|")


def render_table(rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table of ``rows`` (the first is the header); empty rows and columns
    that are empty in every row are dropped. "" when nothing is left."""
    cleaned = [[_cell(value) for value in row] for row in rows]
    cleaned = [row for row in cleaned if any(row)]
    if not cleaned:
        return ""
    width = max(len(row) for row in cleaned)
    for row in cleaned:
        row.extend([""] * (width - len(row)))
    keep = [i for i in range(width) if any(row[i] for row in cleaned)]
    cleaned = [[row[i] for i in keep] for row in cleaned]
    header, body = cleaned[0], cleaned[1:]
    lines = [_line(header), "|" + "|".join(" --- " for _ in header) + "|"]
    lines.extend(_line(row) for row in body)
    return "\n".join(lines)


def _line(cells: Sequence[str]) -> str:
    # an empty cell is one space, as whitespace cleaning would leave it anyway
    return "|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|"


def table_spans(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, header)`` of each Markdown table in ``text``: its span and its header
    and separator lines (what a chunk that starts inside the table repeats)."""
    spans: list[tuple[int, int, str]] = []
    offset = 0
    lines = text.split("\n")
    i = 0
    positions = []
    for line in lines:
        positions.append(offset)
        offset += len(line) + 1
    while i < len(lines) - 1:
        if TABLE_ROW.match(lines[i]) and SEPARATOR_ROW.match(lines[i + 1]):
            j = i + 2
            while j < len(lines) and TABLE_ROW.match(lines[j]):
                j += 1
            start = positions[i]
            end = positions[j - 1] + len(lines[j - 1])
            spans.append((start, end, lines[i] + "\n" + lines[i + 1] + "\n"))
            i = j
        else:
            i += 1
    return spans
