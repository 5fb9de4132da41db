"""Text cleaning: whitespace, control characters, broken lines, blank lines, headers/footers."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

# Sentence ends, Chinese and Latin, optionally followed by closing quotes or brackets.
# A line ending here is a real line end: never joined to the next one.
_SENTENCE_END = re.compile(r"[。！？；：!?;:.…][”’\"'」』）)\]》]*$")
_LIST_ITEM = re.compile(
    r"^(?:[-*•·▪●◦]\s|\d{1,3}[.)、]\s?|\(\d{1,3}\)|[（(][一二三四五六七八九十]+[)）]"
    r"|[一二三四五六七八九十]+、|第[一二三四五六七八九十百\d]+[章节条款部分])"
)
_SPACES = re.compile(r"[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_DIGITS = re.compile(r"\d+")
# Lines shorter than this share of the block's widest line end a paragraph or are
# titles: they were not wrapped by the layout, so they are not joined.
_SHORT_LINE = 0.6


def normalize_whitespace(text: str) -> str:
    """Unify line breaks, turn exotic spaces into one space, drop control/format characters.

    Chinese punctuation is left alone on purpose (no NFKC): ，。：； must survive as the
    splitter's sentence boundaries.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.replace("\u2028", "\n").replace("\u2029", "\n\n").replace("\f", "\n\n")
    text = text.replace("\v", "\n")
    text = "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf")
    )
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return "\n".join(lines)


def is_cjk(ch: str) -> bool:
    """CJK ideographs, kana, hangul and CJK/full-width punctuation."""
    cp = ord(ch)
    return (
        0x2E80 <= cp <= 0x9FFF
        or 0xAC00 <= cp <= 0xD7AF
        or 0xF900 <= cp <= 0xFAFF
        or 0xFF00 <= cp <= 0xFFEF
        or 0x20000 <= cp <= 0x3FFFF
    )


def _width(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in line)


def join_broken_lines(block: str) -> str:
    """Join the lines of one paragraph that a layout wrapped inside a sentence.

    A line is kept when it ends a sentence (。！？；： or Latin), is short (a title or a
    paragraph's last line), or the next line starts a list item. A hyphen at a line end
    before a lowercase letter is a word split and is removed. Joins between CJK text add
    no space; joins between Latin words add one.
    """
    lines = [line for line in block.split("\n") if line]
    if len(lines) < 2:
        return "\n".join(lines)
    widest = max(_width(line) for line in lines)
    out = lines[0]
    for prev, line in zip(lines, lines[1:], strict=False):
        keep = (
            _is_table_row(prev)
            or _is_table_row(line)
            or _SENTENCE_END.search(prev)
            or _width(prev) < _SHORT_LINE * widest
            or _LIST_ITEM.match(line)
        )
        if keep:
            out += "\n" + line
        elif prev.endswith("-") and len(prev) > 1 and prev[-2].isalpha() and line[0].islower():
            out = out[:-1] + line
        elif is_cjk(prev[-1]) or is_cjk(line[0]):
            out += line
        else:
            out += " " + line
    return out


def _is_table_row(line: str) -> bool:
    # Markdown table rows (rag.loaders.tables) are one row per line: never joined, and
    # never taken for a running header, or the table loses its header row
    return line.startswith("|") and line.endswith("|")


def clean_text(text: str) -> str:
    """Normalise whitespace, join broken lines per paragraph, collapse blank lines."""
    text = normalize_whitespace(text)
    blocks = [join_broken_lines(block) for block in re.split(r"\n\s*\n", text)]
    text = "\n\n".join(block for block in blocks if block)
    return _BLANK_LINES.sub("\n\n", text).strip()


def _line_key(line: str) -> str:
    # Page numbers change from page to page; the header around them does not.
    return _DIGITS.sub("#", _SPACES.sub(" ", line).strip())


def strip_headers_footers(
    pages: Sequence[str], *, edge_lines: int = 2, min_share: float = 0.5, min_pages: int = 3
) -> list[str]:
    """Drop lines found among the first or last ``edge_lines`` lines of most pages.

    Lines are compared with digits masked, so "Page 3 of 10" and "- 4 -" count as
    repeats. Only edge lines are removed; the same words inside a page's body stay.
    """
    if not 0 < min_share <= 1:
        raise ValueError("min_share must be in (0, 1]")
    if len(pages) < min_pages:
        return list(pages)
    split = [[line for line in normalize_whitespace(page).split("\n")] for page in pages]
    counts: Counter[str] = Counter()
    for lines in split:
        counts.update({_line_key(line) for line in _edges(lines, edge_lines)
                       if line and not _is_table_row(line)})
    threshold = max(min_pages, math.ceil(min_share * len(pages)))
    repeated = {key for key, n in counts.items() if n >= threshold and key}
    if not repeated:
        return list(pages)
    cleaned = []
    for lines in split:
        nonblank = [i for i, line in enumerate(lines) if line]
        edges = set(nonblank[:edge_lines] + nonblank[-edge_lines:])
        kept = [
            line for i, line in enumerate(lines) if not (i in edges and _line_key(line) in repeated)
        ]
        cleaned.append("\n".join(kept))
    return cleaned


def _edges(lines: list[str], n: int) -> list[str]:
    nonblank = [line for line in lines if line]
    return nonblank[:n] + nonblank[-n:]


def clean_pages(pages: Sequence[str]) -> list[str]:
    """Clean the pages of one file: headers and footers first (they need all pages)."""
    return [clean_text(page) for page in strip_headers_footers(pages)]
