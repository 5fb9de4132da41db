"""Spreadsheets (.xlsx via openpyxl) and .csv files: one Markdown table per sheet.

A sheet is one document whose ``page`` is the sheet's 1-based position, titled with the
sheet's name, so a hit says which sheet it came from.
"""

from __future__ import annotations

import csv
import io

from rag.documents import Document, DocumentMetadata
from rag.errors import LoaderError
from rag.loaders.archive import check_archive
from rag.loaders.base import DEFAULT_OPTIONS, LoadOptions
from rag.loaders.tables import render_table
from rag.loaders.text import decode_or_fail

# A sheet's "used range" can claim a million empty rows; stop reading after this many
# empty rows in a row, and cap the columns the same way.
_EMPTY_RUN = 1000
_MAX_COLUMNS = 512


def load_xlsx(data: bytes, source: str, content_hash: str,
              options: LoadOptions = DEFAULT_OPTIONS) -> list[Document]:
    try:
        import openpyxl
    except ImportError as exc:  # pragma: no cover - the rag extra installs it
        raise LoaderError(source, "openpyxl is missing: pip install 'ragate[rag]'") from exc
    if not data:
        raise LoaderError(source, "empty file")
    check_archive(data, source)
    try:
        # read-only streams the sheet XML; data_only takes formulas' cached values
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises KeyError, zip and XML errors on bad input
        raise LoaderError(source, f"malformed .xlsx file: {exc!r}") from exc
    documents = []
    try:
        for number, sheet in enumerate(book.worksheets, start=1):
            rows = sheet.iter_rows(values_only=True, max_col=_MAX_COLUMNS)  # never pad wider
            table = render_table(_rows(rows))
            if table:
                meta = DocumentMetadata(source, content_hash, number, {"sheet": sheet.title})
                documents.append(Document(f"{sheet.title}\n\n{table}", meta))
    except Exception as exc:
        raise LoaderError(source, f"malformed .xlsx file: {exc!r}") from exc
    finally:
        book.close()
    if not documents:
        raise LoaderError(source, "workbook contains no values")
    return documents


def _rows(rows):
    empty = 0
    for row in rows:
        row = row[:_MAX_COLUMNS]
        if any(value is not None and str(value).strip() for value in row):
            empty = 0
            yield row
        else:
            empty += 1
            if empty >= _EMPTY_RUN:
                return


def load_csv(data: bytes, source: str, content_hash: str,
             options: LoadOptions = DEFAULT_OPTIONS) -> list[Document]:
    text, encoding = decode_or_fail(data, source)
    try:
        dialect = csv.Sniffer().sniff(text[:16384], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel  # one column, or too irregular to guess: plain commas
    try:
        rows = [row[:_MAX_COLUMNS] for row in csv.reader(io.StringIO(text), dialect)]
    except csv.Error as exc:
        raise LoaderError(source, f"malformed CSV: {exc}") from exc
    table = render_table(rows)
    if not table:
        raise LoaderError(source, "file contains no values")
    return [Document(table, DocumentMetadata(source, content_hash, None, {"encoding": encoding}))]
