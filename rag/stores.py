"""Local folders and Milvus seen as one store: each base lives in the one it was made in.

A name is looked up in Milvus first, then in the folders: a base being migrated exists
in both for a moment, and once its rows are all in Milvus that copy is the one served.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rag.embeddings import Embedder
from rag.errors import KnowledgeBaseExistsError, KnowledgeBaseNotFoundError
from rag.knowledge_base import KnowledgeBaseInfo, KnowledgeBaseStore
from rag.milvus_store import (
    INSERT_BATCH,
    MilvusKnowledgeBaseStore,
    _document_row,
    adjust_counts,
    companions,
    term_counts,
    terms,
)
from rag.snapshot import Manifest

STORES = ("local", "milvus")
EMBEDDED_MILVUS = "milvus.db"  # milvus-lite's folder under the root when no URI is given
Progress = Callable[[int, int], None]


class KnowledgeStores:
    def __init__(self, local: KnowledgeBaseStore, milvus: MilvusKnowledgeBaseStore | None = None,
                 default: str = "local") -> None:
        if default not in STORES:
            raise ValueError(f"store must be one of {', '.join(STORES)}, got {default!r}")
        if default == "milvus" and milvus is None:
            raise ValueError("the default store is milvus but no Milvus is configured")
        self.local = local
        self.milvus = milvus
        self.default = default
        self.root = local.root

    def _where(self, name: str) -> Any:
        if self.milvus is not None and self.milvus.exists(name):
            return self.milvus
        if self.local.exists(name):
            return self.local
        raise KnowledgeBaseNotFoundError(f"knowledge base {name!r} not found")

    def store_of(self, name: str) -> str:
        return "milvus" if self._where(name) is self.milvus else "local"

    def exists(self, name: str) -> bool:
        try:
            self._where(name)
        except KnowledgeBaseNotFoundError:
            return False
        return True

    def manifest(self, name: str) -> Manifest:
        return self._where(name).manifest(name)  # type: ignore[no-any-return]

    def open(self, name: str, embedder: Embedder | None = None, retrieval: Any = None) -> Any:
        return self._where(name).open(name, embedder, retrieval)

    def delete(self, name: str) -> None:
        self._where(name).delete(name)

    def create(self, name: str, embedder: Embedder, *, store: str | None = None,
               **options: Any) -> Any:
        target = store or self.default
        if target not in STORES:
            raise ValueError(f"store must be one of {', '.join(STORES)}, got {target!r}")
        if self.exists(name):
            raise KnowledgeBaseExistsError(f"knowledge base {name!r} already exists")
        if target == "milvus":
            if self.milvus is None:
                raise ValueError("store milvus: no Milvus is configured (knowledge.milvus_uri)")
            return self.milvus.create(name, embedder, **options)
        return self.local.create(name, embedder, **options)

    def list(self) -> list[KnowledgeBaseInfo]:
        found = {i.name: i for i in self.local.list()}
        if self.milvus is not None:
            for m in self.milvus.list():
                found[m.name] = KnowledgeBaseInfo(m.name, m.embedding_model, m.dimension,
                                                  m.index_kind, m.documents, m.chunks,
                                                  m.version, m.updated_at, 0, "milvus")
        return [found[n] for n in sorted(found)]

    def migrate(self, name: str, on_progress: Progress | None = None) -> Manifest:
        """Copy a local base into Milvus as it is (chunks, tokens, vectors: nothing is
        parsed or embedded again), publish it there, then remove the local folders."""
        if self.milvus is None:
            raise ValueError("no Milvus is configured (knowledge.milvus_uri)")
        if self.milvus.exists(name):
            raise KnowledgeBaseExistsError(f"knowledge base {name!r} is already in Milvus")
        base = self.local.open(name)
        with base.writer_lock():  # no write lands on the local copy while it moves
            manifest = copy_snapshot(base.live_snapshot(), self.milvus, name, on_progress)
            self.local.delete(name)
        return manifest


def copy_snapshot(snapshot: Any, milvus: MilvusKnowledgeBaseStore, name: str,
                  on_progress: Progress | None = None) -> Manifest:
    from dataclasses import replace

    source = snapshot.manifest
    target = replace(source, store="milvus", collection=milvus.collection_name(name, 1))
    milvus.create_collections(target)
    client, collection = milvus.client, target.collection
    try:
        ids, vectors = snapshot.dense.export()
        vector_of = dict(zip(ids.tolist(), range(len(ids)), strict=True))
        db = snapshot._conn
        total = source.chunks
        done, last = 0, -1
        counts: Counter[str] = Counter()
        while True:
            rows = db.execute(
                'SELECT c.row_id, c.doc_id, c.ordinal, c.page, c.start, c."end", c.text, '
                "c.tokens, d.source FROM chunks c JOIN documents d USING (doc_id) "
                "WHERE c.row_id > ? ORDER BY c.row_id LIMIT ?", (last, INSERT_BATCH)).fetchall()
            if not rows:
                break
            batch = [
                {"row_id": r[0], "doc_id": r[1], "ordinal": r[2],
                 "page": -1 if r[3] is None else r[3], "start": r[4], "end": r[5],
                 "text": r[6], "terms": terms(r[7].split(" ") if r[7] else []),
                 "source": r[8], "dense": np.asarray(vectors[vector_of[r[0]]]).tolist()}
                for r in rows]
            client.insert(collection, batch)
            counts.update(term_counts(row["terms"] for row in batch))
            last = rows[-1][0]
            done += len(rows)
            if on_progress:
                on_progress(done, total)
        documents = snapshot.documents()
        if documents:
            client.insert(f"{collection}_docs", [_document_row(d) for d in documents])
        adjust_counts(client, f"{collection}_terms", counts, +1)
        for name_ in companions(str(collection)):
            client.flush(name_)
        published = replace(target, next_row=max([0, *ids.tolist()]) + 1)
        milvus._write(published)  # last: until now the base was served from its folders
    except BaseException:
        milvus.drop_collections(str(collection))
        raise
    return published


def open_stores(root: Path, *, store: str = "local", milvus_uri: str | None = None,
                milvus_token: str | None = None) -> KnowledgeStores:
    """The stores a config names: Milvus when it is the default, has a URI, or an
    embedded milvus-lite folder is already under ``root`` (a base migrated into it)."""
    local = KnowledgeBaseStore(root)
    milvus = None
    embedded = root / EMBEDDED_MILVUS
    if store == "milvus" or milvus_uri or embedded.is_dir():
        milvus = MilvusKnowledgeBaseStore(milvus_uri or str(embedded), root / ".locks",
                                          token=milvus_token)
    return KnowledgeStores(local, milvus, store)
