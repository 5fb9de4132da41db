"""Plain-text loader: detects the encoding (GB18030, Big5, UTF-8 with or without BOM, UTF-16)."""

from __future__ import annotations

from rag.documents import Document, DocumentMetadata
from rag.errors import LoaderError
from rag.loaders.base import DEFAULT_OPTIONS, LoadOptions
from rag.loaders.encoding import UndetectableEncodingError, decode_text


def decode_or_fail(data: bytes, source: str) -> tuple[str, str]:
    """Decode a text file's bytes, translating failures into LoaderError."""
    if not data:
        raise LoaderError(source, "empty file")
    try:
        text, encoding = decode_text(data)
    except UndetectableEncodingError as exc:
        raise LoaderError(source, str(exc)) from exc
    if not text.strip():
        raise LoaderError(source, "file contains no text")
    return text, encoding


def load_text(data: bytes, source: str, content_hash: str,
              options: LoadOptions = DEFAULT_OPTIONS) -> list[Document]:
    text, encoding = decode_or_fail(data, source)
    meta = DocumentMetadata(source, content_hash, None, {"encoding": encoding})
    return [Document(text, meta)]
