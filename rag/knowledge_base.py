"""Knowledge bases on disk: versioned snapshots published atomically, and the store that names them.

Layout of one base::

    <root>/<name>/CURRENT                  name of the live snapshot, replaced with os.replace
    <root>/<name>/.lock                    flock held by the one writer
    <root>/<name>/snapshots/v000007/       manifest.json, kb.sqlite, dense.faiss(+.json), lexical/
    <root>/<name>/snapshots/.tmp-<uuid>/   a write in progress (or left by a crash)

A write copies the live snapshot into a temporary folder, changes it, flushes it, renames
it to the next version and only then replaces CURRENT. A crash at any point leaves
CURRENT naming a complete snapshot; leftovers are removed by the next write.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rag.documents import Chunk, Passage
from rag.embeddings import Embedder, check_embeddings
from rag.errors import (
    DocumentNotFoundError,
    EmbedderMissingError,
    EmbeddingMismatchError,
    InvalidNameError,
    KnowledgeBaseCorruptError,
    KnowledgeBaseExistsError,
    KnowledgeBaseLockedError,
    KnowledgeBaseNotFoundError,
)
from rag.index import INDEX_KINDS, DenseIndex
from rag.ocr import OCR_MODES
from rag.retrieval import HybridRetriever, RetrievalConfig
from rag.snapshot import (
    DB_FILE,
    MANIFEST_FILE,
    ChunkingConfig,
    DocumentInfo,
    Manifest,
    Snapshot,
    fsync_dir,
    fsync_tree,
    open_db,
    read_manifest,
    write_indexes,
)
from rag.splitting import TextSplitter
from rag.tokenization import tokenize

CURRENT = "CURRENT"
SNAPSHOTS = "snapshots"
LOCK = ".lock"
_VERSION_DIR = re.compile(r"^v(\d{6,})$")
EMBED_BATCH = 64


def splitter_for(chunking: ChunkingConfig, embedder: Embedder | None) -> TextSplitter:
    """The splitter for ``chunking``; token units count ``embedder``'s tokens."""
    counter = None
    if chunking.unit == "tokens":
        counter = getattr(embedder, "count_tokens", None)
        if counter is None:
            raise EmbedderMissingError("token-sized chunks need an embedder with count_tokens")
    return TextSplitter(chunking.size, chunking.overlap, unit=chunking.unit,
                        length_function=counter)


def check_ocr_mode(mode: str) -> None:
    if mode not in OCR_MODES:
        raise ValueError(f"ocr must be one of {', '.join(OCR_MODES)}, got {mode!r}")


def lexical_tokens(chunks: Sequence[Chunk]) -> list[str]:
    """What the BM25 index stores per chunk: its tokens, space-separated."""
    return [" ".join(tokenize(c.text)) for c in chunks]

# Progress callback: number of chunks embedded so far, out of how many.
EmbedProgress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class PreparedFile:
    """A file loaded, cleaned and split, ready to be embedded and stored."""

    source: str
    content_hash: str
    pages: int
    chunks: list[Chunk]
    metadata: dict = field(default_factory=dict)
    # filled by an ingestion worker (rag.workers): the chunks' vectors, from the base's
    # own embedder, and their lexical tokens, so the writer embeds and tokenizes nothing
    vectors: np.ndarray | None = None
    tokens: list[str] | None = None


@dataclass(frozen=True, slots=True)
class AddResult:
    """What an add did, per file: new, replacing an older version, unchanged, or a copy."""

    added: list[str]
    replaced: list[str]
    unchanged: list[str]
    duplicates: dict[str, str]
    chunks_added: int
    version: int


@dataclass(slots=True)
class SortedFiles:
    """What an add does with each file (see ``sort_files``)."""

    plan: list[PreparedFile] = field(default_factory=list)  # to store, in order
    stale: list[str] = field(default_factory=list)  # doc ids their new versions replace
    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)  # source -> stored copy


def sort_files(files: Sequence[PreparedFile], stored: Mapping[str, tuple[str, str]],
               source_of_hash: Mapping[str, str]) -> SortedFiles:
    """Same source and hash: unchanged. Same source, new hash: replaces the stored
    version. Another source with the same hash (stored, or earlier in ``files``): a
    duplicate. ``stored``: source -> (doc_id, content_hash) of what the base holds (at
    least the files' sources); ``source_of_hash``: content hash -> stored source (at
    least the files' hashes)."""
    out = SortedFiles()
    by_hash = dict(source_of_hash)
    for f in files:
        old = stored.get(f.source)
        if old and old[1] == f.content_hash:
            out.unchanged.append(f.source)
        elif f.content_hash in by_hash and by_hash[f.content_hash] != f.source:
            out.duplicates[f.source] = by_hash[f.content_hash]
        else:
            if old:
                out.stale.append(old[0])
                out.replaced.append(f.source)
            else:
                out.added.append(f.source)
            by_hash[f.content_hash] = f.source
            out.plan.append(f)
    return out


def check_new_base(index_kind: str, ocr: str, chunking: ChunkingConfig) -> None:
    """Refuse a base that could not be built, before anything is written."""
    check_index_kind(index_kind)
    check_ocr_mode(ocr)
    TextSplitter(chunking.size, chunking.overlap, unit=chunking.unit,
                 length_function=len if chunking.unit == "tokens" else None)


def check_index_kind(kind: str) -> None:
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")


def search_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """A search's keyword overrides of RetrievalConfig fields (None keeps the default)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if "score_threshold" in given:  # one threshold given: it holds for every language
        given.setdefault("threshold_cjk", None)
    return given


def require_embedder(embedder: Embedder | None, name: str) -> Embedder:
    if embedder is None:
        raise EmbedderMissingError(f"open {name!r} with an embedder to add documents")
    return embedder


def check_embedder(embedder: Embedder, manifest: Manifest) -> None:
    """A base is searched and written only with the model (and dimension) it was built with."""
    if (embedder.name, embedder.dimension) != (manifest.embedding_model, manifest.dimension):
        raise EmbeddingMismatchError(manifest.embedding_model, manifest.dimension,
                                     embedder.name, embedder.dimension)


def embed_texts(embedder: Embedder, texts: list[str],
                on_progress: EmbedProgress | None) -> np.ndarray:
    parts = []
    for i in range(0, len(texts), EMBED_BATCH):
        batch = texts[i : i + EMBED_BATCH]
        parts.append(check_embeddings(embedder.embed(batch), len(batch), embedder.dimension))
        if on_progress:
            on_progress(min(i + EMBED_BATCH, len(texts)), len(texts))
    if not parts:
        return np.zeros((0, embedder.dimension), np.float32)
    return np.vstack(parts)


def plan_vectors(embedder: Embedder, plan: Sequence[PreparedFile],
                 on_progress: EmbedProgress | None) -> np.ndarray:
    """The plan's vectors in chunk order: a worker's where it embedded the file, else
    embedded here."""
    missing = [c.text for f in plan if f.vectors is None for c in f.chunks]
    fresh = iter(embed_texts(embedder, missing, on_progress))
    rows: list[np.ndarray] = []
    for f in plan:
        if f.vectors is None:
            rows.extend(next(fresh) for _ in f.chunks)
        else:
            rows.extend(check_embeddings(f.vectors, len(f.chunks), embedder.dimension))
    if not rows:
        return np.zeros((0, embedder.dimension), np.float32)
    return np.vstack(rows)


class KnowledgeBase:
    """One knowledge base. Searches are thread-safe and never wait for a write.

    ``embedder`` may be None for reading documents and for purely lexical search; it
    must match the manifest's model and dimension, else EmbeddingMismatchError.
    """

    def __init__(self, path: str | Path, embedder: Embedder | None = None,
                 retrieval: RetrievalConfig | None = None, *, lock_timeout: float = 600.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        if not (self.path / SNAPSHOTS).is_dir():
            raise KnowledgeBaseNotFoundError(f"no knowledge base at {self.path}")
        self._write_lock = threading.Lock()
        self._snapshot = self._load_live()
        self._own_retrieval = retrieval is not None  # else the embedder's fitted defaults
        self.retrieval = retrieval or RetrievalConfig.for_embedder(
            self._snapshot.manifest.embedding_model)
        self.embedder: Embedder | None = None
        if embedder is not None:
            check_embedder(embedder, self._snapshot.manifest)
            self.embedder = embedder

    # -- reading ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def manifest(self) -> Manifest:
        return self._snapshot.manifest

    @property
    def version(self) -> int:
        return self._snapshot.version

    def documents(self) -> list[DocumentInfo]:
        return self._snapshot.documents()

    def chunks(self, source: str, offset: int = 0, limit: int = 100
               ) -> tuple[DocumentInfo, list[Chunk]]:
        """A document and ``limit`` of its chunks from ``offset``, as they were split (for
        admins checking the splitting)."""
        snapshot = self._snapshot
        document = snapshot.document(source)
        if document is None:
            raise DocumentNotFoundError(f"no document {source!r} in {self.name!r}")
        return document, snapshot.chunks_of(document.doc_id, offset, limit)

    def splitter(self) -> TextSplitter:
        """The splitter this base was configured with (token units use the embedder's)."""
        return splitter_for(self.manifest.chunking, self.embedder)

    def retriever(self, config: RetrievalConfig | None = None, **kwargs) -> HybridRetriever:
        return HybridRetriever(self._snapshot, self.embedder, config or self.retrieval, **kwargs)

    def search(self, query: str, **overrides) -> list[Passage]:
        """Passages for ``query``; keyword overrides replace RetrievalConfig fields (None
        keeps the base's default)."""
        return HybridRetriever(self._snapshot, self.embedder, self.retrieval).retrieve(
            query, **search_overrides(overrides))

    def refresh(self) -> bool:
        """Load the live snapshot if another process published a newer one; raise
        KnowledgeBaseNotFoundError once the base was deleted (here or elsewhere)."""
        if not (self.path / SNAPSHOTS).is_dir():
            raise KnowledgeBaseNotFoundError(f"knowledge base {self.name!r} not found")
        live = _read_current(self.path)
        if live == self._snapshot.folder.name:
            return False
        snapshot = self._load_live()
        if self.embedder is not None:
            check_embedder(self.embedder, snapshot.manifest)
        self._snapshot = snapshot
        return True

    # -- writing ----------------------------------------------------------------------
    def add(self, files: Sequence[PreparedFile], *,
            on_progress: EmbedProgress | None = None) -> AddResult:
        """Store prepared files in one new snapshot.

        Same source and hash: unchanged (no-op). Same source, new hash: the old version's
        chunks are replaced. Another source with the same hash: skipped as a duplicate.
        """
        embedder = self._require_embedder()
        with self._writing() as draft:
            # a rebuild with another model may have landed since this base was opened:
            # its vectors must never be mixed with this embedder's (both may be 384-d)
            check_embedder(embedder, draft.base.manifest)
            db, dense = draft.db, draft.dense
            held = db.execute("SELECT source, doc_id, content_hash FROM documents").fetchall()
            sorting = sort_files(files, {s: (d, h) for s, d, h in held},
                                 {h: s for s, _, h in held})
            added, replaced, unchanged, duplicates = (
                sorting.added, sorting.replaced, sorting.unchanged, sorting.duplicates)
            plan = sorting.plan
            if not plan:
                return AddResult(added, replaced, unchanged, duplicates, 0, draft.base.version)
            self._delete_docs(db, dense, sorting.stale)
            texts = [c.text for f in plan for c in f.chunks]
            vectors = plan_vectors(embedder, plan, on_progress)
            next_row = (db.execute("SELECT MAX(row_id) FROM chunks").fetchone()[0] or 0) + 1
            row_ids = np.arange(next_row, next_row + len(texts), dtype=np.int64)
            now = time.time()
            rows = iter(row_ids.tolist())
            for f in plan:
                doc_id = f.chunks[0].doc_id if f.chunks else f"empty-{f.content_hash[:12]}"
                db.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (doc_id, f.source, f.content_hash, f.pages, len(f.chunks), now,
                            json.dumps(f.metadata, ensure_ascii=False)))
                db.executemany(
                    'INSERT INTO chunks (row_id, chunk_id, doc_id, ordinal, page, start, "end", '
                    "text, tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(next(rows), c.id, c.doc_id, c.ordinal, c.metadata.page, c.metadata.start,
                      c.metadata.end, c.text, tokens)
                     for c, tokens in zip(f.chunks, f.tokens or lexical_tokens(f.chunks),
                                          strict=True)],
                )
            dense.add(row_ids, vectors)
        return AddResult(added, replaced, unchanged, duplicates, len(texts), self.version)

    def set_ocr(self, mode: str) -> None:
        """How later uploads read pages without a text layer (stored files stay as read)."""
        check_ocr_mode(mode)
        with self._writing(manifest_changes=lambda m: replace(m, ocr=mode)):
            pass

    def delete_document(self, source: str) -> None:
        with self._writing() as draft:
            db = draft.db
            row = db.execute("SELECT doc_id FROM documents WHERE source = ?", (source,)).fetchone()
            if row is None:
                raise DocumentNotFoundError(f"no document {source!r} in {self.name!r}")
            self._delete_docs(db, draft.dense, [row[0]])

    def rebuild(self, embedder: Embedder, *, index_kind: str | None = None,
                embedding_path: str | None = None,
                on_progress: EmbedProgress | None = None) -> None:
        """Re-embed every chunk with ``embedder`` (maybe another model) into a new snapshot."""
        kind = index_kind or self.manifest.index_kind
        check_index_kind(kind)
        with self._writing(manifest_changes=lambda m: replace(
            m, embedding_model=embedder.name, dimension=embedder.dimension, index_kind=kind,
            embedding_path=embedding_path or _path_hint(embedder),
        )) as draft:
            rows = draft.db.execute("SELECT row_id, text FROM chunks ORDER BY row_id").fetchall()
            vectors = embed_texts(embedder, [r[1] for r in rows], on_progress)
            draft.dense = DenseIndex(embedder.dimension, kind)  # type: ignore[arg-type]
            draft.dense.add(np.array([r[0] for r in rows], dtype=np.int64), vectors)
        self.embedder = embedder
        if not self._own_retrieval:
            self.retrieval = RetrievalConfig.for_embedder(embedder.name)

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold this base's writer lock (no other process writes it meanwhile)."""
        with self._write_lock, _file_lock(self.path / LOCK, self.lock_timeout):
            yield

    def live_snapshot(self) -> Snapshot:
        """The snapshot CURRENT names now (read under ``writer_lock`` to copy it whole)."""
        return self._load_live()

    # -- internals --------------------------------------------------------------------
    def _require_embedder(self) -> Embedder:
        return require_embedder(self.embedder, self.name)

    @staticmethod
    def _delete_docs(db: sqlite3.Connection, dense: DenseIndex, doc_ids: list[str]) -> None:
        for doc_id in doc_ids:
            rows = [r[0] for r in db.execute("SELECT row_id FROM chunks WHERE doc_id = ?",
                                             (doc_id,))]
            dense.remove(rows)
            db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
            db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))

    def _load_live(self) -> Snapshot:
        live = _read_current(self.path)
        candidates = ([live] if live else []) + [
            d.name for d in sorted(_versions(self.path), key=_version_of, reverse=True)
            if d.name != live
        ]
        errors = []
        for name in candidates:
            try:
                return Snapshot.load(self.path / SNAPSHOTS / name)
            except Exception as exc:  # try older snapshots before giving up
                errors.append(f"{name}: {exc}")
        raise KnowledgeBaseCorruptError(
            f"no loadable snapshot in {self.path}: {'; '.join(errors) or 'none found'}"
        )

    @contextmanager
    def _writing(self, manifest_changes: Callable[[Manifest], Manifest] | None = None
                 ) -> Iterator[_Draft]:
        """Yield a writable copy of the live snapshot; publish it if the block succeeds."""
        with self._write_lock, _file_lock(self.path / LOCK, self.lock_timeout):
            snapshot = self._load_live()  # another process may have written since
            snapshots = self.path / SNAPSHOTS
            tmp = snapshots / f".tmp-{uuid.uuid4().hex}"
            tmp.mkdir()
            db = open_db(tmp / DB_FILE, readonly=False)
            try:
                source = open_db(snapshot.folder / DB_FILE, readonly=True)
                source.backup(db)
                source.close()
                draft = _Draft(db, snapshot.dense.copy(), snapshot)
                before = db.total_changes
                yield draft
                if db.total_changes == before and manifest_changes is None:
                    db.close()
                    shutil.rmtree(tmp, ignore_errors=True)
                    return
                db.commit()
                docs, chunks = db.execute(
                    "SELECT (SELECT COUNT(*) FROM documents), (SELECT COUNT(*) FROM chunks)"
                ).fetchone()
                _compact(db)
                dense = draft.dense
                lexical = write_indexes(tmp, db, dense)
                db.close()
                version = max([_version_of(d) for d in _versions(self.path)] + [0]) + 1
                manifest = replace(snapshot.manifest, version=version, documents=docs,
                                   chunks=chunks, updated_at=time.time())
                if manifest_changes is not None:
                    manifest = manifest_changes(manifest)
                (tmp / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
                fsync_tree(tmp)
                final = snapshots / f"v{version:06d}"
                os.rename(tmp, final)
                fsync_dir(snapshots)
                _write_current(self.path, final.name)
                self._snapshot = Snapshot(final, manifest, dense, lexical)
            except BaseException:
                db.close()
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _collect_garbage(self.path, keep=final.name)


@dataclass(slots=True)
class _Draft:
    """The writable copy a write works on: its SQLite rows and its dense index."""

    db: sqlite3.Connection
    dense: DenseIndex
    base: Snapshot


def _compact(db: sqlite3.Connection) -> None:
    # Deletes leave free pages that the copy to the next snapshot would carry along.
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    total = db.execute("PRAGMA page_count").fetchone()[0]
    if total and free > total // 4:
        db.execute("VACUUM")


def _path_hint(embedder: Embedder) -> str | None:
    """What ``load_embedder`` reloads the embedder from: its reference or its folder."""
    reference = getattr(embedder, "reference", None) or getattr(embedder, "path", None)
    return str(reference) if reference is not None else None


def _versions(kb: Path) -> list[Path]:
    folder = kb / SNAPSHOTS
    return [d for d in folder.iterdir() if _VERSION_DIR.match(d.name)] if folder.is_dir() else []


def _version_of(folder: Path) -> int:
    return int(folder.name[1:])


def _read_current(kb: Path) -> str | None:
    try:
        name = (kb / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name if _VERSION_DIR.match(name) else None


def _write_current(kb: Path, name: str) -> None:
    """Point CURRENT at ``name`` atomically: a reader sees the old name or the new one."""
    tmp = kb / f".{CURRENT}.{uuid.uuid4().hex}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(name + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, kb / CURRENT)
    fsync_dir(kb)


def _collect_garbage(kb: Path, keep: str) -> None:
    """Remove crash leftovers and all but the live snapshot and the one before it.

    The previous snapshot stays so a reader that loaded it a moment ago can still read
    its SQLite rows until it refreshes.
    """
    live = _version_of(kb / SNAPSHOTS / keep)
    older = sorted((d for d in _versions(kb) if _version_of(d) < live), key=_version_of)
    doomed = older[:-1] + [d for d in _versions(kb) if _version_of(d) > live]
    doomed += [d for d in (kb / SNAPSHOTS).iterdir() if d.name.startswith(".tmp-")]
    doomed += [f for f in kb.iterdir() if f.name.startswith(f".{CURRENT}.")]
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


@contextmanager
def _file_lock(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive flock: one writer per base across processes (released if it dies)."""
    deadline = time.monotonic() + timeout
    with open(path, "a+b") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise KnowledgeBaseLockedError(
                        f"{path.parent.name}: another writer has held the lock for {timeout:g} s"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# -- the store ------------------------------------------------------------------------

_NAME = re.compile(r"^[^\W_][\w.-]{0,63}$")


def validate_kb_name(name: str) -> str:
    """Return ``name`` if it is a safe folder name, else raise InvalidNameError.

    Letters (any script), digits, ``_ . -``; 1-64 characters; starts with a letter or
    digit; no ``..``. Nothing that could climb out of the store's root.
    """
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise InvalidNameError(
            f"invalid knowledge base name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class KnowledgeBaseInfo:
    """A knowledge base as listed by the store (read from its manifest, indexes not loaded)."""

    name: str
    embedding_model: str
    dimension: int
    index_kind: str
    documents: int
    chunks: int
    version: int
    updated_at: float
    size_bytes: int = 0  # the live version's files on disk (database and indexes)
    store: str = "local"


def _live_size(folder: Path) -> int:
    live = _read_current(folder)
    if live is None:
        return 0
    try:
        return sum(f.stat().st_size for f in (folder / SNAPSHOTS / live).iterdir()
                   if f.is_file())
    except OSError:  # replaced meanwhile: the next listing has it
        return 0


class KnowledgeBaseStore:
    """Creates, lists, opens and deletes knowledge bases under one root folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, name: str) -> Path:
        path = self.root / validate_kb_name(name)
        if path.resolve().parent != self.root.resolve():
            raise InvalidNameError(f"invalid knowledge base name {name!r}")
        return path

    def exists(self, name: str) -> bool:
        return (self.path_for(name) / SNAPSHOTS).is_dir()

    def create(self, name: str, embedder: Embedder, *, index_kind: str = "flat",
               chunking: ChunkingConfig | None = None,
               retrieval: RetrievalConfig | None = None, ocr: str = "auto") -> KnowledgeBase:
        """Create an empty base built for ``embedder`` (its name and dimension are recorded)."""
        path = self.path_for(name)
        chunking = chunking or ChunkingConfig()
        check_new_base(index_kind, ocr, chunking)
        if path.exists():
            raise KnowledgeBaseExistsError(f"knowledge base {name!r} already exists")
        staging = self.root / f".tmp-{uuid.uuid4().hex}"
        first = staging / SNAPSHOTS / "v000001"
        first.mkdir(parents=True)
        try:
            now = time.time()
            manifest = Manifest(name=name, version=1, embedding_model=embedder.name,
                                dimension=embedder.dimension, index_kind=index_kind,
                                chunking=chunking, embedding_path=_path_hint(embedder),
                                ocr=ocr, created_at=now, updated_at=now)
            db = open_db(first / DB_FILE, readonly=False)
            write_indexes(first, db, DenseIndex(embedder.dimension, index_kind))  # type: ignore[arg-type]
            db.close()
            (first / MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
            _write_current(staging, first.name)
            fsync_tree(staging)
            try:
                os.rename(staging, path)  # fails if another create won the race
            except OSError as exc:
                raise KnowledgeBaseExistsError(f"knowledge base {name!r} already exists") from exc
            fsync_dir(self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return KnowledgeBase(path, embedder, retrieval)

    def open(self, name: str, embedder: Embedder | None = None,
             retrieval: RetrievalConfig | None = None) -> KnowledgeBase:
        if not self.exists(name):
            raise KnowledgeBaseNotFoundError(f"knowledge base {name!r} not found")
        return KnowledgeBase(self.path_for(name), embedder, retrieval)

    def manifest(self, name: str) -> Manifest:
        """The live manifest of a base, without loading its indexes."""
        path = self.path_for(name)
        live = _read_current(path)
        if live is None:
            raise KnowledgeBaseNotFoundError(f"knowledge base {name!r} not found")
        return read_manifest(path / SNAPSHOTS / live)

    def list(self) -> list[KnowledgeBaseInfo]:
        out = []
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith(".") or not folder.is_dir():
                continue
            try:
                m = self.manifest(folder.name)
            except (InvalidNameError, KnowledgeBaseNotFoundError, OSError, ValueError):
                continue  # not a knowledge base, or one being deleted
            out.append(KnowledgeBaseInfo(folder.name, m.embedding_model, m.dimension,
                                         m.index_kind, m.documents, m.chunks, m.version,
                                         m.updated_at, _live_size(folder)))
        return out

    def delete(self, name: str) -> None:
        """Delete a base: renamed away first (atomic), then removed from disk."""
        path = self.path_for(name)
        if not self.exists(name):
            raise KnowledgeBaseNotFoundError(f"knowledge base {name!r} not found")
        trash = self.root / f".trash-{uuid.uuid4().hex}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
