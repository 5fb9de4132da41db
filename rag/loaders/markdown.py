"""Markdown loader: decodes like plain text, then strips markup that would pollute retrieval."""

from __future__ import annotations

import re

from rag.documents import Document, DocumentMetadata
from rag.loaders.base import DEFAULT_OPTIONS, LoadOptions
from rag.loaders.text import decode_or_fail

_FRONT_MATTER = re.compile(r"\A---\n.*?\n---\n", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_EMPHASIS = re.compile(r"(\*\*|__|~~|`)(?=\S)(.+?)(?<=\S)\1")
_FENCE = re.compile(r"^\s*(```|~~~)")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def markdown_to_text(md: str) -> str:
    """Plain text with headings and code blocks as their own paragraphs.

    Headings get blank lines around them and fenced code is kept verbatim in its own
    paragraph, so line joining in cleaning never glues a title onto the text after it.
    """
    md = _FRONT_MATTER.sub("", md.replace("\r\n", "\n"))
    md = _COMMENT.sub("", md)
    out: list[str] = []
    in_code = False
    for line in md.split("\n"):
        if _FENCE.match(line):
            in_code = not in_code
            out.append("")
            continue
        if in_code:
            out.append(line)
            continue
        if _TABLE_RULE.match(line):
            continue
        heading = _HEADING.match(line)
        if heading:
            out.extend(["", heading.group(1), ""])
            continue
        line = _IMAGE.sub(r"\1", line)
        line = _LINK.sub(r"\1", line)
        line = _EMPHASIS.sub(r"\2", line)
        if line.lstrip().startswith("|"):
            line = " ".join(cell.strip() for cell in line.strip().strip("|").split("|"))
        out.append(line)
    return "\n".join(out)


def load_markdown(data: bytes, source: str, content_hash: str,
                  options: LoadOptions = DEFAULT_OPTIONS) -> list[Document]:
    text, encoding = decode_or_fail(data, source)
    meta = DocumentMetadata(source, content_hash, None, {"encoding": encoding})
    return [Document(markdown_to_text(text), meta)]
