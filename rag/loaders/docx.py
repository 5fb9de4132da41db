"""Word (.docx) loader: paragraphs and tables (as Markdown) in body order, via python-docx."""

from __future__ import annotations

import io
import zipfile
from typing import Any

from rag.documents import Document, DocumentMetadata
from rag.errors import LoaderError
from rag.loaders.archive import check_archive
from rag.loaders.base import DEFAULT_OPTIONS, LoadOptions
from rag.loaders.tables import render_table


def load_docx(data: bytes, source: str, content_hash: str,
              options: LoadOptions = DEFAULT_OPTIONS) -> list[Document]:
    try:
        import docx
        from docx.table import Table
    except ImportError as exc:  # pragma: no cover - the rag extra installs it
        raise LoaderError(source, "python-docx is missing: pip install 'ragate[rag]'") from exc
    if not data:
        raise LoaderError(source, "empty file")
    if not zipfile.is_zipfile(io.BytesIO(data)):
        # Password-protected .docx files are OLE containers, not zip archives.
        raise LoaderError(source, "not a valid .docx file (encrypted, legacy .doc, or corrupt)")
    check_archive(data, source)
    try:
        document = docx.Document(io.BytesIO(data))
        blocks: list[str] = []
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                table = render_table(_rows(item))
                if table:
                    blocks.append(table)
            elif item.text.strip():
                blocks.append(item.text)
    except Exception as exc:  # python-docx raises KeyError, lxml errors, ... on bad input
        raise LoaderError(source, f"malformed .docx file: {exc!r}") from exc
    if not blocks:
        raise LoaderError(source, "document contains no text")
    # Blank lines between Word paragraphs: they are paragraphs, never wrapped lines.
    return [Document("\n\n".join(blocks), DocumentMetadata(source, content_hash, None))]


def _rows(table: Any) -> list[list[str]]:
    # a merged cell is one cell object in several grid slots: keep its text once per row
    rows = []
    for row in table.rows:
        seen: set[int] = set()
        cells = []
        for cell in row.cells:
            cells.append("" if id(cell._tc) in seen else cell.text)
            seen.add(id(cell._tc))
        rows.append(cells)
    return rows
