"""Knowledge bases in Milvus: chunks, their dense vectors and their BM25 index on the
server, so every replica searches the same data with nothing to load or reload.

Layout (``prefix`` is ``ragate`` unless the store is given another)::

    {prefix}_manifests               one row per base: its Manifest (JSON)
    {prefix}_kb_{hash}_{generation}  the chunks: row id, text, position, dense vector,
                                     hashed tokens and the BM25 sparse vector Milvus
                                     derives from them (a BM25 Function)
    ..._docs                         one row per stored file
    ..._terms                        each term's document frequency (chunks holding it)

Lexical search sees our own tokens (``rag.tokenization``: jieba for Chinese), each
hashed to an ASCII word, so the server's ``standard`` analyzer keeps them whole: the
same terms as a local base, on any Milvus, whatever analyzers it has. The score is
normalised as locally, by the query terms' summed idf, from the document frequencies
that each write keeps in ``_terms`` (one ``get`` per query, cached per base version: a
TEXT_MATCH count per term took ~110 ms on milvus-lite at 2k chunks). A rebuild writes a
new generation and drops the old one. Writers of one base take a file lock under
``lock_root`` (the volume the uploads are staged on); readers never wait.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rag.documents import Chunk, ChunkMetadata, Passage, chunk_id
from rag.embeddings import Embedder, check_embeddings
from rag.errors import (
    DocumentNotFoundError,
    KnowledgeBaseExistsError,
    KnowledgeBaseNotFoundError,
)
from rag.knowledge_base import (
    AddResult,
    EmbedProgress,
    PreparedFile,
    _file_lock,
    _path_hint,
    check_embedder,
    check_index_kind,
    check_new_base,
    check_ocr_mode,
    plan_vectors,
    require_embedder,
    search_overrides,
    sort_files,
    splitter_for,
    validate_kb_name,
)
from rag.retrieval import HybridRetriever, RetrievalConfig
from rag.snapshot import ChunkingConfig, DocumentInfo, Manifest
from rag.splitting import TextSplitter
from rag.tokenization import tokenize

log = logging.getLogger("ragate.milvus")

MAX_VARCHAR = 65_535
INTENT_PART = 60_000  # characters of a write's intent per manifests row
INSERT_BATCH = 1_000
QUERY_BATCH = 1_000
NEIGHBOURS = 2  # chunks fetched each side of a hit (retrieval expands 1 by default)
HNSW_EF = 256  # milvus-lite's default ef of 64 found under half the true neighbours
_CHUNK_FIELDS = ["row_id", "doc_id", "ordinal", "page", "start", "end", "text", "source"]


def _hash(text: str, size: int = 8) -> str:
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def term(token: str) -> str:
    """A token as one ASCII word that every analyzer keeps whole (and lowercase)."""
    return "t" + _hash(token, 6)


def terms(tokens: Sequence[str]) -> str:
    out, size = [], 0
    for token in tokens:
        size += 14
        if size > MAX_VARCHAR:  # a chunk far past any embedder's window: its tail unindexed
            break
        out.append(term(token))
    return " ".join(out)


def _client(uri: str, token: str | None = None) -> Any:
    from pymilvus import MilvusClient

    if uri.endswith(".db"):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        # embedded milvus-lite serves gRPC in this process and logs an ERROR with a stack
        # for every call it does not implement (pymilvus asks it for timestamps)
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    return MilvusClient(uri=uri, token=token or "")


class MilvusKnowledgeBaseStore:
    """Creates, lists, opens and deletes knowledge bases in one Milvus."""

    def __init__(self, uri: str, lock_root: str | Path, *, token: str | None = None,
                 prefix: str = "ragate") -> None:
        self.uri = uri
        self.client = _client(uri, token)
        self.prefix = prefix
        self.manifests = f"{prefix}_manifests"
        self.lock_root = Path(lock_root)
        self.lock_root.mkdir(parents=True, exist_ok=True)
        if not self.client.has_collection(self.manifests):
            self._create_manifests()
        self.client.load_collection(self.manifests)

    def _create_manifests(self) -> None:
        from pymilvus import DataType

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("manifest", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector
        index = self.client.prepare_index_params()
        index.add_index("unused", index_type="FLAT", metric_type="L2")
        self.client.create_collection(self.manifests, schema=schema, index_params=index,
                                      consistency_level="Strong")

    # -- manifests -------------------------------------------------------------------------
    def _read(self, name: str) -> Manifest | None:
        rows = self.client.get(self.manifests, ids=[_hash(name)], output_fields=["manifest"])
        return Manifest.from_json(rows[0]["manifest"]) if rows else None

    def _write(self, manifest: Manifest) -> None:
        self.client.upsert(self.manifests, [{"key": _hash(manifest.name),
                                             "manifest": manifest.to_json(),
                                             "unused": [0.0, 0.0]}])
        self.client.flush(self.manifests)

    # -- a write's intent (see MilvusKnowledgeBase._writing) ------------------------------
    def _intent_keys(self, name: str, parts: int) -> list[str]:
        return [f"{_hash(name)}-w{i}" for i in range(parts)]

    def save_intent(self, name: str, intent: dict[str, Any]) -> None:
        text = json.dumps(intent, ensure_ascii=False)
        pieces = [text[i : i + INTENT_PART] for i in range(0, len(text), INTENT_PART)]
        keys = self._intent_keys(name, len(pieces))
        # the first row says how many there are, and is written last: whole or absent
        rows = [{"key": key, "manifest": json.dumps({"intent": piece, "parts": len(pieces)},
                                                    ensure_ascii=False),
                 "unused": [0.0, 0.0]} for key, piece in zip(keys, pieces, strict=True)]
        for i in range(0, len(rows[1:]), 16):
            self.client.upsert(self.manifests, rows[1 + i : 1 + i + 16])
        self.client.upsert(self.manifests, rows[:1])
        self.client.flush(self.manifests)

    def read_intent(self, name: str) -> dict[str, Any] | None:
        first = self.client.get(self.manifests, ids=self._intent_keys(name, 1),
                                output_fields=["manifest"])
        if not first:
            return None
        head = json.loads(first[0]["manifest"])
        keys = self._intent_keys(name, head["parts"])
        rest = {r["key"]: json.loads(r["manifest"])["intent"]
                for r in self.client.get(self.manifests, ids=keys[1:],
                                         output_fields=["manifest"])} if keys[1:] else {}
        return json.loads(head["intent"] + "".join(rest[k] for k in keys[1:]))  # type: ignore[no-any-return]

    def clear_intent(self, name: str) -> None:
        first = self.client.get(self.manifests, ids=self._intent_keys(name, 1),
                                output_fields=["manifest"])
        if first:
            parts = json.loads(first[0]["manifest"])["parts"]
            self.client.delete(self.manifests, ids=self._intent_keys(name, 1))  # first
            if parts > 1:
                self.client.delete(self.manifests, ids=self._intent_keys(name, parts)[1:])
            self.client.flush(self.manifests)

    def exists(self, name: str) -> bool:
        return self._read(validate_kb_name(name)) is not None

    def manifest(self, name: str) -> Manifest:
        found = self._read(validate_kb_name(name))
        if found is None:
            raise KnowledgeBaseNotFoundError(f"knowledge base {name!r} not found")
        return found

    def list(self) -> list[Manifest]:
        rows = self.client.query(self.manifests, filter='key != ""',
                                 output_fields=["manifest"], limit=16_384)
        return sorted((Manifest.from_json(r["manifest"]) for r in rows  # not the intents
                       if not r["manifest"].startswith('{"intent"')), key=lambda m: m.name)

    # -- bases -----------------------------------------------------------------------------
    def create(self, name: str, embedder: Embedder, *, index_kind: str = "flat",
               chunking: ChunkingConfig | None = None,
               retrieval: RetrievalConfig | None = None, ocr: str = "auto"
               ) -> MilvusKnowledgeBase:
        """An empty base built for ``embedder`` (its name and dimension are recorded)."""
        validate_kb_name(name)
        chunking = chunking or ChunkingConfig()
        check_new_base(index_kind, ocr, chunking)
        with self.lock(name):
            if self._read(name) is not None:
                raise KnowledgeBaseExistsError(f"knowledge base {name!r} already exists")
            now = time.time()
            fresh = Manifest(name=name, version=1, embedding_model=embedder.name,
                             dimension=embedder.dimension, index_kind=index_kind,
                             chunking=chunking, embedding_path=_path_hint(embedder), ocr=ocr,
                             created_at=now, updated_at=now, store="milvus",
                             collection=self.collection_name(name, 1))
            self.create_collections(fresh)
            self._write(fresh)
        return MilvusKnowledgeBase(self, name, embedder, retrieval)

    def collection_name(self, name: str, generation: int) -> str:
        """A base's chunks collection; a rebuild writes the next generation."""
        return f"{self.prefix}_kb_{_hash(name)}_{generation}"

    def create_collections(self, manifest: Manifest) -> None:
        from pymilvus import DataType, Function, FunctionType

        assert manifest.collection is not None
        client = self.client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("row_id", DataType.INT64, is_primary=True)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=64)
        schema.add_field("ordinal", DataType.INT64)
        schema.add_field("page", DataType.INT64)  # -1: a file without pages
        schema.add_field("start", DataType.INT64)
        schema.add_field("end", DataType.INT64)
        schema.add_field("source", DataType.VARCHAR, max_length=1024)
        schema.add_field("text", DataType.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("terms", DataType.VARCHAR, max_length=MAX_VARCHAR,
                         enable_analyzer=True, enable_match=True,
                         analyzer_params={"tokenizer": "standard"})
        schema.add_field("bm25", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=manifest.dimension)
        schema.add_function(Function(name="bm25_of_terms", function_type=FunctionType.BM25,
                                     input_field_names=["terms"], output_field_names=["bm25"]))
        index = client.prepare_index_params()
        if manifest.index_kind == "flat":
            index.add_index("dense", index_type="FLAT", metric_type="COSINE")
        elif manifest.index_kind == "hnsw":
            index.add_index("dense", index_type="HNSW", metric_type="COSINE",
                            params={"M": 16, "efConstruction": 200})
        else:
            index.add_index("dense", index_type="IVF_FLAT", metric_type="COSINE",
                            params={"nlist": 128})
        index.add_index("bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        client.create_collection(manifest.collection, schema=schema, index_params=index,
                                 consistency_level="Strong")
        docs = client.create_schema(auto_id=False, enable_dynamic_field=False)
        docs.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
        docs.add_field("info", DataType.VARCHAR, max_length=MAX_VARCHAR)  # DocumentInfo JSON
        docs.add_field("content_hash", DataType.VARCHAR, max_length=128)
        docs.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
        docs_index = client.prepare_index_params()
        docs_index.add_index("unused", index_type="FLAT", metric_type="L2")
        client.create_collection(f"{manifest.collection}_docs", schema=docs,
                                 index_params=docs_index, consistency_level="Strong")
        counts = client.create_schema(auto_id=False, enable_dynamic_field=False)
        counts.add_field("term", DataType.VARCHAR, is_primary=True, max_length=16)
        counts.add_field("df", DataType.INT64)
        counts.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
        client.create_collection(f"{manifest.collection}_terms", schema=counts,
                                 index_params=docs_index, consistency_level="Strong")
        for collection in companions(manifest.collection):
            client.load_collection(collection)

    def drop_collections(self, collection: str) -> None:
        for name in companions(collection):
            if self.client.has_collection(name):
                self.client.drop_collection(name)

    def open(self, name: str, embedder: Embedder | None = None,
             retrieval: RetrievalConfig | None = None) -> MilvusKnowledgeBase:
        if not self.exists(name):
            raise KnowledgeBaseNotFoundError(f"knowledge base {name!r} not found")
        return MilvusKnowledgeBase(self, name, embedder, retrieval)

    def delete(self, name: str) -> None:
        with self.lock(name):
            manifest = self.manifest(name)
            self.client.delete(self.manifests, ids=[_hash(name)])
            self.client.flush(self.manifests)
            self.clear_intent(name)
            if manifest.collection:
                self.drop_collections(manifest.collection)

    def lock(self, name: str, timeout: float = 600.0) -> Any:
        return _file_lock(self.lock_root / f".milvus-{_hash(name)}.lock", timeout)

    def ping(self) -> None:
        self.client.has_collection(self.manifests)

    def close(self) -> None:
        self.client.close()


class MilvusKnowledgeBase:
    """One base in Milvus, with the methods of a local KnowledgeBase."""

    def __init__(self, store: MilvusKnowledgeBaseStore, name: str,
                 embedder: Embedder | None = None,
                 retrieval: RetrievalConfig | None = None) -> None:
        self.store = store
        self.client = store.client
        self._name = name
        self._manifest = store.manifest(name)
        self._own_retrieval = retrieval is not None
        self.retrieval = retrieval or RetrievalConfig.for_embedder(
            self._manifest.embedding_model)
        self._write_lock = threading.Lock()
        self._df: dict[str, int] = {}  # a term's document frequency at _df_version
        self._df_version = self._manifest.version
        self.embedder: Embedder | None = None
        if embedder is not None:
            check_embedder(embedder, self._manifest)
            self.embedder = embedder

    # -- reading ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def version(self) -> int:
        return self._manifest.version

    @property
    def collection(self) -> str:
        assert self._manifest.collection is not None
        return self._manifest.collection

    def refresh(self) -> bool:
        """Nothing to load: the newest manifest only (the rows are on the server);
        KnowledgeBaseNotFoundError once the base was deleted."""
        live = self.store.manifest(self._name)
        if live.version == self._manifest.version:
            return False
        if self.embedder is not None:
            check_embedder(self.embedder, live)
        self._manifest = live
        return True

    def documents(self) -> list[DocumentInfo]:
        rows = self.client.query(f"{self.collection}_docs", filter='key != ""',
                                 output_fields=["info"], limit=16_384)
        return sorted((DocumentInfo(**json.loads(r["info"])) for r in rows),
                      key=lambda d: d.source)

    def document(self, source: str) -> DocumentInfo | None:
        rows = self.client.get(f"{self.collection}_docs", ids=[_hash(source)],
                               output_fields=["info"])
        return DocumentInfo(**json.loads(rows[0]["info"])) if rows else None

    def chunks(self, source: str, offset: int = 0, limit: int = 100
               ) -> tuple[DocumentInfo, list[Chunk]]:
        document = self.document(source)
        if document is None:
            raise DocumentNotFoundError(f"no document {source!r} in {self.name!r}")
        return document, MilvusView(self).get_range(document.doc_id, offset,
                                                     offset + limit - 1)

    def splitter(self) -> TextSplitter:
        return splitter_for(self.manifest.chunking, self.embedder)

    def search(self, query: str, **overrides: Any) -> list[Passage]:
        return HybridRetriever(MilvusView(self), self.embedder, self.retrieval).retrieve(
            query, **search_overrides(overrides))

    def doc_frequencies(self, words: Sequence[str]) -> dict[str, int]:
        """How many chunks hold each term (cached until the base's next version)."""
        if self._df_version != self._manifest.version or len(self._df) > 200_000:
            self._df, self._df_version = {}, self._manifest.version
        missing = [w for w in words if w not in self._df]
        if missing:
            found = read_counts(self.client, f"{self.collection}_terms", missing)
            self._df.update((w, found.get(w, 0)) for w in missing)
        return {w: self._df[w] for w in words}

    def _count_terms(self, sign: int, rows: Sequence[dict[str, Any]]) -> None:
        """Add (or with ``sign`` -1 remove) these chunk rows' terms to the counts."""
        adjust_counts(self.client, f"{self.collection}_terms",
                      term_counts(r["terms"] for r in rows), sign)

    def _rows_of(self, doc_id: str) -> list[dict[str, Any]]:
        return [r for batch in _iter_rows(self.client, self.collection, ["row_id", "terms"],
                                          f'doc_id == "{doc_id}"') for r in batch]

    # -- writing ---------------------------------------------------------------------------
    def add(self, files: Sequence[PreparedFile], *,
            on_progress: EmbedProgress | None = None) -> AddResult:
        """Store prepared files (same rules as a local base: unchanged, replaced,
        duplicate by content hash); the new version is visible to every replica at once,
        whole (see ``_writing``)."""
        embedder = self._require_embedder()
        with self._writing() as draft:
            check_embedder(embedder, draft.manifest)
            held = self._documents_of([f.source for f in files])
            sorting = sort_files(files, {d.source: (d.doc_id, d.content_hash) for d in held},
                                 self._sources_with_hashes([f.content_hash for f in files]))
            plan = sorting.plan
            if not plan:
                draft.changed = False  # nothing written: no new version
                return AddResult(sorting.added, sorting.replaced, sorting.unchanged,
                                 sorting.duplicates, 0, draft.manifest.version)
            vectors = plan_vectors(embedder, plan, on_progress)
            rows: list[dict[str, Any]] = []
            now = time.time()
            for f in plan:
                tokens = f.tokens or [" ".join(tokenize(c.text)) for c in f.chunks]
                for c, words in zip(f.chunks, tokens, strict=True):
                    rows.append(_row(draft.next_row, c, words, vectors[len(rows)]))
                    draft.next_row += 1
            draft.stale = list(sorting.stale)
            draft.stale_rows = [r for doc_id in sorting.stale for r in self._rows_of(doc_id)]
            draft.docs = [asdict(DocumentInfo(
                f.chunks[0].doc_id if f.chunks else f"empty-{f.content_hash[:12]}", f.source,
                f.content_hash, f.pages, len(f.chunks), now, f.metadata)) for f in plan]
            draft.chunks += len(rows) - len(draft.stale_rows)
            draft.documents += len(sorting.added)
            self._begin(draft)  # before the first row: a crash from here on is undone
            for i in range(0, len(rows), INSERT_BATCH):
                self.client.insert(self.collection, rows[i : i + INSERT_BATCH])
            self._count_terms(+1, rows)
        return AddResult(sorting.added, sorting.replaced, sorting.unchanged,
                         sorting.duplicates, len(rows), self.version)

    def _documents_of(self, sources: Sequence[str]) -> list[DocumentInfo]:
        keys = sorted({_hash(s) for s in sources})
        rows = [r for i in range(0, len(keys), QUERY_BATCH)
                for r in self.client.get(f"{self.collection}_docs",
                                         ids=keys[i : i + QUERY_BATCH], output_fields=["info"])]
        return [DocumentInfo(**json.loads(r["info"])) for r in rows]

    def _sources_with_hashes(self, hashes: Sequence[str]) -> dict[str, str]:
        """Content hash -> the stored source with it, for these hashes (hex: safe to quote)."""
        wanted = sorted(set(hashes))
        out: dict[str, str] = {}
        for i in range(0, len(wanted), QUERY_BATCH):
            part = wanted[i : i + QUERY_BATCH]
            for r in self.client.query(f"{self.collection}_docs",
                                       filter=f"content_hash in {json.dumps(part)}",
                                       output_fields=["info"], limit=len(part) * 4):
                info = json.loads(r["info"])
                out.setdefault(info["content_hash"], info["source"])
        return out

    def delete_document(self, source: str) -> None:
        with self._writing() as draft:
            document = self.document(source)
            if document is None:
                raise DocumentNotFoundError(f"no document {source!r} in {self.name!r}")
            draft.stale = [document.doc_id]
            draft.stale_rows = self._rows_of(document.doc_id)
            draft.removed = [source]
            draft.chunks -= len(draft.stale_rows)
            draft.documents -= 1
            self._begin(draft)

    def set_ocr(self, mode: str) -> None:
        check_ocr_mode(mode)
        with self._writing(ocr=mode):
            pass

    def rebuild(self, embedder: Embedder, *, index_kind: str | None = None,
                embedding_path: str | None = None,
                on_progress: EmbedProgress | None = None) -> None:
        """Re-embed every chunk into a new generation of collections, then switch."""
        kind = index_kind or self.manifest.index_kind
        check_index_kind(kind)
        with self.store.lock(self.name):
            self._manifest = self.store.manifest(self.name)
            self._recover()  # a dead writer's rows must not be copied, nor its version taken
            old = self._manifest
            generation = int(str(old.collection).rsplit("_", 1)[1]) + 1
            new = replace(old, embedding_model=embedder.name, dimension=embedder.dimension,
                          index_kind=kind, embedding_path=embedding_path or _path_hint(embedder),
                          collection=self.store.collection_name(self.name, generation))
            self.store.create_collections(new)
            try:
                total, done = old.chunks, 0
                for batch in _iter_rows(self.client, str(old.collection),
                                        [*_CHUNK_FIELDS, "terms"]):
                    vectors = check_embeddings(embedder.embed([r["text"] for r in batch]),
                                               len(batch), embedder.dimension)
                    self.client.insert(new.collection, [
                        {**{k: r[k] for k in (*_CHUNK_FIELDS, "terms")}, "dense": v.tolist()}
                        for r, v in zip(batch, vectors, strict=True)])
                    done += len(batch)
                    if on_progress:
                        on_progress(done, total)
                docs = _iter_rows(self.client, f"{old.collection}_docs",
                                  ["key", "info", "content_hash"])
                for batch in docs:
                    self.client.insert(f"{new.collection}_docs",
                                       [{**r, "unused": [0.0, 0.0]} for r in batch])
                for batch in _iter_rows(self.client, f"{old.collection}_terms", ["term", "df"]):
                    self.client.insert(f"{new.collection}_terms",
                                       [{**r, "unused": [0.0, 0.0]} for r in batch])
                for collection in companions(str(new.collection)):
                    self.client.flush(collection)
            except BaseException:
                self.store.drop_collections(str(new.collection))
                raise
            self.store._write(replace(new, version=old.version + 1, updated_at=time.time()))
            self.store.drop_collections(str(old.collection))
        self._manifest = self.store.manifest(self.name)
        self.embedder = embedder
        if not self._own_retrieval:
            self.retrieval = RetrievalConfig.for_embedder(embedder.name)

    # -- internals -------------------------------------------------------------------------
    @contextmanager
    def _writing(self, **changes: Any) -> Iterator[_Draft]:
        """Hold the writer lock over a change, and make it visible whole, or not at all.

        Milvus has no transactions, so a write runs in steps around one commit: its
        intent is recorded (``_begin``); its new chunks go in with row ids at or above the
        manifest's ``next_row``, which every search filters out; the next manifest is
        published (the commit: the chunks are visible from here on); then the document
        rows are written and the replaced chunks deleted; the intent goes last. A writer
        that dies midway leaves its intent, and the next writer of the base finishes it
        (committed) or removes its chunks (not committed), then counts the terms again."""
        with self._write_lock, self.store.lock(self.name):
            self._manifest = self.store.manifest(self.name)  # another writer's, maybe
            self._recover()
            base = self._manifest
            draft = _Draft(base, base.next_row, chunks=base.chunks, documents=base.documents)
            yield draft
            if not draft.changed:
                return
            self.client.flush(self.collection)
            manifest = replace(base, version=base.version + 1, chunks=draft.chunks,
                               documents=draft.documents, next_row=draft.next_row,
                               updated_at=time.time(), **changes)
            self.store._write(manifest)  # the commit
            self._manifest = manifest
            if draft.begun:
                self._finish(draft.intent(), draft.stale_rows)
                self.store.clear_intent(self.name)

    def _begin(self, draft: _Draft) -> None:
        draft.begun = True
        self.store.save_intent(self.name, draft.intent())

    def _finish(self, intent: dict[str, Any], stale_rows: Sequence[dict[str, Any]] = ()
                ) -> None:
        """The steps after a write's commit: its document rows, the chunks and document
        rows it replaced or deleted (``row_id`` below the write's first: not its own)."""
        if intent["docs"]:
            self.client.upsert(f"{self.collection}_docs",
                               [_document_row(DocumentInfo(**d)) for d in intent["docs"]])
        if intent["stale"]:
            if stale_rows:  # (after a crash the counts are taken again instead)
                self._count_terms(-1, stale_rows)
            self.client.delete(self.collection, filter=f"doc_id in {json.dumps(intent['stale'])}"
                                                       f" and row_id < {intent['start_row']}")
        if intent["removed"]:
            self.client.delete(f"{self.collection}_docs",
                               ids=[_hash(source) for source in intent["removed"]])
        for collection in companions(self.collection):
            self.client.flush(collection)

    def _recover(self) -> None:
        """Finish or undo the write a dead writer left (its intent is still stored)."""
        intent = self.store.read_intent(self.name)
        if intent is None:
            return
        committed = self._manifest.version >= intent["version"]
        log.warning("knowledge base %s: %s the write to version %s that a writer left "
                    "unfinished", self.name, "finishing" if committed else "undoing",
                    intent["version"])
        if committed:
            self._finish(intent)
        else:
            self.client.delete(self.collection, filter=f"row_id >= {intent['start_row']}")
        recount_terms(self.client, self.collection)
        for collection in companions(self.collection):
            self.client.flush(collection)
        self._manifest = replace(self._manifest, version=self._manifest.version + 1,
                                 chunks=_count(self.client, self.collection),
                                 documents=_count(self.client, f"{self.collection}_docs"),
                                 updated_at=time.time())
        self.store._write(self._manifest)
        self.store.clear_intent(self.name)

    def _require_embedder(self) -> Embedder:
        return require_embedder(self.embedder, self.name)


@dataclass(slots=True)
class _Draft:
    """A write in progress: the manifest it started from, the next free row id, the
    counts it leaves, what goes after its commit, and whether it changed anything (a
    no-op publishes no new version)."""

    manifest: Manifest
    next_row: int
    chunks: int = 0
    documents: int = 0
    docs: list[dict[str, Any]] = field(default_factory=list)  # DocumentInfo to write
    stale: list[str] = field(default_factory=list)  # doc ids whose older chunks go
    stale_rows: list[dict[str, Any]] = field(default_factory=list)  # their terms
    removed: list[str] = field(default_factory=list)  # sources whose document row goes
    changed: bool = True
    begun: bool = False

    def intent(self) -> dict[str, Any]:
        return {"version": self.manifest.version + 1, "start_row": self.manifest.next_row,
                "docs": self.docs, "stale": self.stale, "removed": self.removed}


def _count(client: Any, collection: str) -> int:
    return int(client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"])


def _document_row(info: DocumentInfo) -> dict[str, Any]:
    return {"key": _hash(info.source), "info": json.dumps(asdict(info), ensure_ascii=False),
            "content_hash": info.content_hash, "unused": [0.0, 0.0]}


def _row(row_id: int, chunk: Chunk, tokens: str, vector: np.ndarray) -> dict[str, Any]:
    m = chunk.metadata
    return {"row_id": row_id, "doc_id": chunk.doc_id, "ordinal": chunk.ordinal,
            "page": -1 if m.page is None else m.page, "start": m.start, "end": m.end,
            "source": m.source, "text": chunk.text,
            "terms": terms(tokens.split(" ") if tokens else []), "dense": vector.tolist()}


def _chunk(row: dict[str, Any]) -> Chunk:
    page = None if row["page"] < 0 else int(row["page"])
    return Chunk(chunk_id(row["doc_id"], row["ordinal"]), row["doc_id"], int(row["ordinal"]),
                 row["text"], ChunkMetadata(row["source"], page, int(row["start"]),
                                            int(row["end"])))


def companions(collection: str) -> tuple[str, str, str]:
    """A base's chunks collection and the two that go with it."""
    return collection, f"{collection}_docs", f"{collection}_terms"


def term_counts(chunk_terms: Iterable[str]) -> Counter[str]:
    """In how many of these chunks each term appears (a chunk counts a term once)."""
    counts: Counter[str] = Counter()
    for words in chunk_terms:
        counts.update(set(words.split()))
    return counts


def read_counts(client: Any, collection: str, words: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(0, len(words), QUERY_BATCH):
        rows = client.get(collection, ids=list(words[i : i + QUERY_BATCH]),
                          output_fields=["df"])
        out.update((r["term"], int(r["df"])) for r in rows)
    return out


def adjust_counts(client: Any, collection: str, deltas: Counter[str], sign: int) -> None:
    """Add ``sign`` × each delta to the stored counts; a count at zero is deleted. Only
    under the base's writer lock: this reads, then writes."""
    words = sorted(deltas)
    current = read_counts(client, collection, words)
    upserts, gone = [], []
    for word in words:
        value = current.get(word, 0) + sign * deltas[word]
        if value > 0:
            upserts.append({"term": word, "df": value, "unused": [0.0, 0.0]})
        elif word in current:
            gone.append(word)
    for i in range(0, len(upserts), INSERT_BATCH):
        client.upsert(collection, upserts[i : i + INSERT_BATCH])
    for i in range(0, len(gone), INSERT_BATCH):
        client.delete(collection, ids=gone[i : i + INSERT_BATCH])


def recount_terms(client: Any, collection: str) -> None:
    """Every term's document frequency counted again from the chunks (after a writer
    died between its rows and its counts). Under the base's writer lock."""
    counts = term_counts(r["terms"] for batch in _iter_rows(client, collection, ["terms"])
                         for r in batch)
    terms_of = f"{collection}_terms"
    stale = [r["term"] for batch in _iter_rows(client, terms_of, ["term"]) for r in batch
             if r["term"] not in counts]
    for i in range(0, len(stale), INSERT_BATCH):
        client.delete(terms_of, ids=stale[i : i + INSERT_BATCH])
    rows = [{"term": t, "df": n, "unused": [0.0, 0.0]} for t, n in sorted(counts.items())]
    for i in range(0, len(rows), INSERT_BATCH):
        client.upsert(terms_of, rows[i : i + INSERT_BATCH])


def _iter_rows(client: Any, collection: str, fields: list[str], filter: str = ""
               ) -> Iterator[list[dict]]:
    iterator = client.query_iterator(collection, batch_size=QUERY_BATCH, filter=filter,
                                     output_fields=fields)
    try:
        while batch := iterator.next():
            yield batch
    finally:
        iterator.close()


class MilvusView:
    """What retrieval asks of a Milvus base: ranked candidates and chunks by id."""

    def __init__(self, base: MilvusKnowledgeBase) -> None:
        self.base = base
        self.client = base.client
        self.collection = base.collection
        self.chunk_count = base.manifest.chunks
        # rows at or above it belong to a write not committed yet: never seen
        self.next_row = base.manifest.next_row
        self.visible = f"row_id < {self.next_row}"
        self._fetched: dict[tuple[str, int], Chunk] = {}  # by (doc_id, ordinal)
        self._ends: set[tuple[str, int]] = set()  # a file's last chunk

    def candidates(self, tokens: Sequence[str], vector: np.ndarray | None, k: int
                   ) -> tuple[dict[int, float], dict[int, float]]:
        lexical: dict[int, float] = {}
        words = sorted({term(t) for t in tokens})
        norm = self._normaliser(words) if words and self.chunk_count else 0.0
        if norm > 0:
            found = self.client.search(self.collection, [" ".join(words)], anns_field="bm25",
                                       limit=k, search_params={"metric_type": "BM25"},
                                       filter=self.visible, output_fields=["row_id"])[0]
            # milvus-lite answers BM25 as a negative distance, Milvus as a positive score
            lexical = {int(h["row_id"]): abs(float(h["distance"])) / norm for h in found}
        dense: dict[int, float] = {}
        if vector is not None:
            params: dict[str, Any] = {"metric_type": "COSINE"}
            if self.base.manifest.index_kind == "hnsw":
                params["params"] = {"ef": max(HNSW_EF, k)}
            elif self.base.manifest.index_kind == "ivf":
                params["params"] = {"nprobe": 32}
            found = self.client.search(self.collection, [vector.tolist()], anns_field="dense",
                                       limit=k, search_params=params, filter=self.visible,
                                       output_fields=["row_id"])[0]
            dense = {int(h["row_id"]): float(h["distance"]) for h in found}
            missing = [row for row in lexical if row not in dense]
            if missing:  # fuse exactly: the lexical-only candidates' cosines
                rows = self.client.get(self.collection, ids=missing, output_fields=["dense"])
                for r in rows:
                    dense[int(r["row_id"])] = float(np.dot(np.asarray(r["dense"], np.float32),
                                                           vector))
        # a dense-only candidate outside the BM25 top k scores 0 lexically (it holds none
        # of the query's rarer terms); the local store scores it exactly
        return lexical, dense

    def _normaliser(self, words: Sequence[str]) -> float:
        """As the local index's: each term's idf, and an unseen term's as if in one chunk."""
        n = self.chunk_count
        total = 0.0
        for df in self.base.doc_frequencies(words).values():
            total += (math.log(1 + (n - df + 0.5) / (df + 0.5)) if df
                      else math.log(1 + (n - 0.5) / 1.5))
        return total

    def get_chunks(self, row_ids: Sequence[int]) -> dict[int, Chunk]:
        """The chunks asked for, fetched with their neighbours in one call: a file's
        chunks get consecutive row ids, so the passages' ranges are then at hand (a row
        after a fetched one that is absent or of another file marks its file's end)."""
        wanted = list(dict.fromkeys(int(i) for i in row_ids))
        if not wanted:
            return {}
        around = {i + d for i in wanted for d in range(-NEIGHBOURS, NEIGHBOURS + 1)
                  if 0 < i + d < self.next_row}
        rows = self.client.get(self.collection, ids=sorted(around), output_fields=_CHUNK_FIELDS)
        by_row = {int(r["row_id"]): _chunk(r) for r in rows}
        for row, chunk in by_row.items():
            self._fetched[(chunk.doc_id, chunk.ordinal)] = chunk
            after = by_row.get(row + 1)
            if row + 1 in around and (after is None or after.doc_id != chunk.doc_id):
                self._ends.add((chunk.doc_id, chunk.ordinal))
        return {i: by_row[i] for i in wanted if i in by_row}

    def get_range(self, doc_id: str, first: int, last: int) -> list[Chunk]:
        found = []
        for ordinal in range(int(first), int(last) + 1):
            chunk = self._fetched.get((doc_id, ordinal))
            if chunk is None:
                break
            found.append(chunk)
            if (doc_id, ordinal) in self._ends:
                return found
        else:
            return found
        rows = self.client.query(
            self.collection, filter=f'doc_id == "{doc_id}" and ordinal >= {int(first)} '
                                    f'and ordinal <= {int(last)} and {self.visible}',
            output_fields=_CHUNK_FIELDS, limit=max(int(last) - int(first) + 1, 1))
        return sorted((_chunk(r) for r in rows), key=lambda c: c.ordinal)
