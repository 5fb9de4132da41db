"""One immutable on-disk version of a knowledge base: SQLite rows, FAISS and BM25 files."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from rag.documents import Chunk, ChunkMetadata
from rag.index import DenseIndex, LexicalIndex

FORMAT = 1
DB_FILE = "kb.sqlite"
DENSE_FILE = "dense.faiss"
LEXICAL_DIR = "lexical"
MANIFEST_FILE = "manifest.json"

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    content_hash TEXT NOT NULL,
    pages INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    added_at REAL NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS documents_hash ON documents(content_hash);
CREATE TABLE IF NOT EXISTS chunks (
    row_id INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    page INTEGER,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    text TEXT NOT NULL,
    tokens TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id, ordinal);
"""


@dataclass(frozen=True, slots=True)
class ChunkingConfig:
    """How files are cut into chunks; ``unit="tokens"`` counts the embedder's tokens."""

    size: int = 300
    overlap: int = 60
    unit: Literal["chars", "tokens"] = "chars"


@dataclass(frozen=True, slots=True)
class Manifest:
    """What built a snapshot. ``embedding_model`` and ``dimension`` gate which embedder
    may open it; ``embedding_path`` is only a hint for tools that need to load it."""

    name: str
    version: int
    embedding_model: str
    dimension: int
    index_kind: str = "flat"
    chunking: ChunkingConfig = field(default_factory=ChunkingConfig)
    embedding_path: str | None = None
    ocr: str = "auto"  # rag.ocr.OCR_MODES: how pages without a text layer are read
    documents: int = 0
    chunks: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    format: int = FORMAT
    # where the base lives: "local" (these folders) or "milvus" (rag.milvus_store), whose
    # chunks are in ``collection`` with row ids below ``next_row``
    store: str = "local"
    collection: str | None = None
    next_row: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data: dict[str, Any] = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"unsupported knowledge base format {data.get('format')!r}")
        data["chunking"] = ChunkingConfig(**data.get("chunking", {}))
        return cls(**data)


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """A file stored in a knowledge base."""

    doc_id: str
    source: str
    content_hash: str
    pages: int
    chunks: int
    added_at: float
    metadata: dict[str, Any] = field(default_factory=dict)


def read_manifest(folder: Path) -> Manifest:
    return Manifest.from_json((folder / MANIFEST_FILE).read_text(encoding="utf-8"))


def open_db(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        # Committed snapshots never change: immutable=1 skips locking entirely.
        uri = f"{path.resolve().as_uri()}?mode=ro&immutable=1"
        return sqlite3.connect(uri, uri=True, check_same_thread=False)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executescript(SCHEMA)
    return conn


class Snapshot:
    """A loaded snapshot: the indexes in memory and a read-only SQLite connection.

    Immutable, so any number of threads may search it; the knowledge base swaps in a
    new Snapshot after a write. The connection closes when the object is collected.
    """

    def __init__(self, folder: Path, manifest: Manifest, dense: DenseIndex,
                 lexical: LexicalIndex) -> None:
        self.folder = folder
        self.manifest = manifest
        self.dense = dense
        self.lexical = lexical
        self._conn = open_db(folder / DB_FILE, readonly=True)
        self._lock = threading.Lock()
        weakref.finalize(self, self._conn.close)

    @classmethod
    def load(cls, folder: Path) -> Snapshot:
        manifest = read_manifest(folder)
        dense = DenseIndex.load(folder / DENSE_FILE)
        lexical = LexicalIndex.load(folder / LEXICAL_DIR)
        if dense.dimension != manifest.dimension:
            raise ValueError(f"{folder}: dense index dimension differs from the manifest")
        if len(dense) != manifest.chunks or len(lexical) != manifest.chunks:
            raise ValueError(f"{folder}: index sizes differ from the manifest's chunk count")
        return cls(folder, manifest, dense, lexical)

    @property
    def version(self) -> int:
        return self.manifest.version

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    _CHUNK_COLUMNS = (
        "c.row_id, c.chunk_id, c.doc_id, c.ordinal, c.page, c.start, c.\"end\", c.text, d.source"
    )

    @staticmethod
    def _chunk(row: tuple) -> Chunk:
        _, cid, doc_id, ordinal, page, start, end, text, source = row
        return Chunk(cid, doc_id, ordinal, text, ChunkMetadata(source, page, start, end))

    def get_chunks(self, row_ids: Sequence[int]) -> dict[int, Chunk]:
        out: dict[int, Chunk] = {}
        ids = list(dict.fromkeys(int(i) for i in row_ids))
        for i in range(0, len(ids), 500):  # SQLite caps bound parameters
            part = ids[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self._query(
                f"SELECT {self._CHUNK_COLUMNS} FROM chunks c JOIN documents d USING (doc_id) "
                f"WHERE c.row_id IN ({marks})",
                part,
            )
            out.update((row[0], self._chunk(row)) for row in rows)
        return out

    def get_range(self, doc_id: str, first: int, last: int) -> list[Chunk]:
        rows = self._query(
            f"SELECT {self._CHUNK_COLUMNS} FROM chunks c JOIN documents d USING (doc_id) "
            "WHERE c.doc_id = ? AND c.ordinal BETWEEN ? AND ? ORDER BY c.ordinal",
            (doc_id, first, last),
        )
        return [self._chunk(row) for row in rows]

    def documents(self) -> list[DocumentInfo]:
        rows = self._query(
            "SELECT doc_id, source, content_hash, pages, chunks, added_at, metadata "
            "FROM documents ORDER BY source"
        )
        return [DocumentInfo(row[0], row[1], row[2], row[3], row[4], row[5],
                             json.loads(row[6])) for row in rows]

    def chunks_of(self, doc_id: str, offset: int = 0, limit: int = 100) -> list[Chunk]:
        """One document's chunks in order, ``limit`` of them from ``offset``."""
        rows = self._query(
            f"SELECT {self._CHUNK_COLUMNS} FROM chunks c JOIN documents d USING (doc_id) "
            "WHERE c.doc_id = ? ORDER BY c.ordinal LIMIT ? OFFSET ?",
            (doc_id, limit, offset),
        )
        return [self._chunk(row) for row in rows]

    def document(self, source: str) -> DocumentInfo | None:
        return next((d for d in self.documents() if d.source == source), None)

    def iter_chunks(self, batch: int = 1000) -> Iterator[list[tuple[int, str]]]:
        """``(row_id, text)`` of every chunk in row order, in batches (for re-embedding)."""
        last = -1
        while True:
            rows = self._query(
                "SELECT row_id, text FROM chunks WHERE row_id > ? ORDER BY row_id LIMIT ?",
                (last, batch),
            )
            if not rows:
                return
            yield rows
            last = rows[-1][0]


def write_indexes(folder: Path, db: sqlite3.Connection, dense: DenseIndex) -> LexicalIndex:
    """Write the dense index and a lexical index rebuilt from the rows in ``db``."""
    rows = db.execute("SELECT row_id, tokens FROM chunks ORDER BY row_id").fetchall()
    lexical = LexicalIndex.build([r[0] for r in rows], [r[1].split(" ") if r[1] else []
                                                       for r in rows])
    dense.save(folder / DENSE_FILE)
    lexical.save(folder / LEXICAL_DIR)
    return lexical


def fsync_tree(folder: Path) -> None:
    """Flush every file and directory under ``folder`` to disk before it is published."""
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
