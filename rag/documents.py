"""The data types that flow through the pipeline: documents, chunks and passages."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class DocumentMetadata:
    """Where a document came from.

    ``source`` is the file's name inside its knowledge base (unique there), ``page`` is
    1-based for paginated formats and ``None`` otherwise, ``content_hash`` is the sha256
    of the whole file's bytes, shared by all pages of one file.
    """

    source: str
    content_hash: str
    page: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Document:
    """Text of one file, or of one page of a paginated file."""

    text: str
    metadata: DocumentMetadata

    @property
    def source(self) -> str:
        return self.metadata.source

    @property
    def page(self) -> int | None:
        return self.metadata.page


@dataclass(frozen=True, slots=True)
class ChunkMetadata:
    """Position of a chunk: its page and character span inside that page's cleaned text."""

    source: str
    page: int | None
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document sized for embedding.

    ``ordinal`` counts chunks from 0 across all pages of one file, so the chunks before and
    after a hit are ``ordinal - 1`` and ``ordinal + 1`` of the same ``doc_id``; ``id`` is
    ``"{doc_id}:{ordinal:06d}"`` and sorts in document order.
    """

    id: str
    doc_id: str
    ordinal: int
    text: str
    metadata: ChunkMetadata


def chunk_id(doc_id: str, ordinal: int) -> str:
    """The id of a document's ``ordinal``-th chunk (sorts in document order)."""
    return f"{doc_id}:{ordinal:06d}"


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved piece of context: a hit chunk, possibly merged with its neighbours.

    ``score`` is the fused relevance of the best hit inside the passage (0..1, higher is
    better); ``chunk_ids`` lists every chunk merged into ``text``, in document order.
    """

    source: str
    page: int | None
    chunk_id: str
    score: float
    text: str
    doc_id: str
    chunk_ids: tuple[str, ...] = ()
    dense_score: float | None = None
    lexical_score: float | None = None


def make_doc_id(source: str, content_hash: str) -> str:
    """A document's id: stable for one version of one file, new when its content changes."""
    return hashlib.sha256(f"{source}\0{content_hash}".encode()).hexdigest()[:16]
