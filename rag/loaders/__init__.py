"""Loaders: turn a file into documents, one module per format, chosen by file extension."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rag.documents import Document
from rag.errors import LoaderError
from rag.loaders.base import DEFAULT_OPTIONS, Loader, LoadOptions, content_hash
from rag.loaders.docx import load_docx
from rag.loaders.encoding import decode_text
from rag.loaders.images import load_image
from rag.loaders.markdown import load_markdown, markdown_to_text
from rag.loaders.pdf import load_pdf
from rag.loaders.sheets import load_csv, load_xlsx
from rag.loaders.text import load_text

LOADERS: dict[str, Loader] = {
    ".pdf": load_pdf,
    ".txt": load_text,
    ".text": load_text,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".docx": load_docx,
    ".xlsx": load_xlsx,
    ".csv": load_csv,
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"), load_image),
}

SUPPORTED_EXTENSIONS = frozenset(LOADERS)


@dataclass(frozen=True, slots=True)
class LoadedFile:
    """The outcome of loading one file: documents, or the reason it failed."""

    source: str
    content_hash: str | None
    documents: list[Document]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def load_bytes(data: bytes, source: str, options: LoadOptions = DEFAULT_OPTIONS
               ) -> list[Document]:
    """Documents from a file's bytes; the format comes from ``source``'s extension.

    Raises LoaderError, and only LoaderError, for anything wrong with the file.
    """
    loader = LOADERS.get(Path(source).suffix.lower())
    if loader is None:
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        raise LoaderError(source, f"unsupported file type (supported: {supported})")
    try:
        return loader(data, source, content_hash(data), options)
    except (LoaderError, MemoryError):  # a worker names the memory bound it hit
        raise
    except Exception as exc:  # a parser bug on hostile input must fail this file only
        raise LoaderError(source, f"cannot read file ({type(exc).__name__}: {exc})") from exc


def load_file(path: str | Path, source: str | None = None) -> list[Document]:
    """Documents from a file on disk; ``source`` defaults to the file's name."""
    path = Path(path)
    source = source or path.name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoaderError(source, f"cannot open file ({exc.strerror or exc})") from exc
    return load_bytes(data, source)


def load_files(paths: Iterable[str | Path]) -> Iterator[LoadedFile]:
    """Load many files; a file that fails yields a LoadedFile with ``error`` and no documents."""
    for path in paths:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            yield LoadedFile(path.name, None, [], f"cannot open file ({exc.strerror or exc})")
            continue
        try:
            yield LoadedFile(path.name, content_hash(data), load_bytes(data, path.name))
        except LoaderError as exc:
            yield LoadedFile(path.name, content_hash(data), [], exc.reason)


__all__ = [
    "LOADERS",
    "LoadOptions",
    "SUPPORTED_EXTENSIONS",
    "LoadedFile",
    "Loader",
    "content_hash",
    "decode_text",
    "load_bytes",
    "load_csv",
    "load_docx",
    "load_file",
    "load_files",
    "load_markdown",
    "load_pdf",
    "load_text",
    "load_xlsx",
    "markdown_to_text",
]
