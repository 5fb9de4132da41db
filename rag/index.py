"""Search indexes: a FAISS dense index behind an ID map, and a BM25 lexical index (bm25s)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

IndexKind = Literal["flat", "hnsw", "ivf"]
INDEX_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf")


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - the rag extra installs it
        raise ImportError("faiss is not installed: pip install 'ragate[rag]'") from exc
    return faiss


class DenseIndex:
    """Inner-product search over normalised vectors, addressed by our int64 chunk ids.

    ``flat`` is exact (the default). ``hnsw`` and ``ivf`` are approximate, for large
    bases. Flat and HNSW sit behind ``IndexIDMap2`` so ids are ours and vectors can be
    read back; IVF stores our ids itself and a hashtable direct map reads vectors back
    (IDMap2 over IVF would hand our ids through and break that map). HNSW cannot delete,
    so a delete rebuilds it from the vectors that remain.
    """

    def __init__(
        self,
        dimension: int,
        kind: IndexKind = "flat",
        *,
        hnsw_m: int = 32,
        ef_search: int = 64,
        nprobe: int = 16,
    ) -> None:
        if dimension <= 0:
            raise ValueError(f"dimension must be positive, got {dimension}")
        if kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
        if hnsw_m < 4 or ef_search < 1 or nprobe < 1:
            raise ValueError("hnsw_m must be >= 4, ef_search and nprobe >= 1")
        self.dimension = dimension
        self.kind: IndexKind = kind
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.nprobe = nprobe
        self._index = self._empty(trained_on=None)

    # -- construction ---------------------------------------------------------------
    def _empty(self, trained_on: np.ndarray | None):
        faiss = _faiss()
        d = self.dimension
        if self.kind == "flat":
            inner = faiss.IndexFlatIP(d)
        elif self.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = max(40, 2 * self.hnsw_m)
            inner.hnsw.efSearch = self.ef_search
        else:
            n = 0 if trained_on is None else len(trained_on)
            # About 4·sqrt(n) lists, and enough points per list for k-means to mean much.
            nlist = max(1, min(int(4 * math.sqrt(n)), n // 39 or 1, 65536))
            quantizer = faiss.IndexFlatIP(d)
            inner = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            inner.nprobe = min(self.nprobe, nlist)
            inner.cp.min_points_per_centroid = 1  # nlist <= n/39 already; no stderr warning
            if trained_on is not None and n:
                inner.train(trained_on)
            # A hashtable direct map lets IDMap2 read vectors back and still remove ids.
            inner.set_direct_map_type(faiss.DirectMap.Hashtable)
            inner.own_fields = True
            quantizer.this.disown()
            return inner
        return faiss.IndexIDMap2(inner)

    def _rebuild(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        index = self._empty(trained_on=vectors if self.kind == "ivf" else None)
        if len(ids):
            index.add_with_ids(vectors, ids)
        self._index = index

    # -- mutation ---------------------------------------------------------------------
    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(ids), self.dimension):
            raise ValueError(
                f"vectors must have shape ({len(ids)}, {self.dimension}), got {vectors.shape}"
            )
        if not len(ids):
            return
        if self.kind == "ivf" and not self._trained_for(len(self) + len(ids)):
            # Train (again) on everything once the base has outgrown its lists.
            old_ids, old_vectors = self.export()
            self._rebuild(np.concatenate([old_ids, ids]), np.vstack([old_vectors, vectors]))
            return
        self._index.add_with_ids(vectors, ids)

    def _trained_for(self, total: int) -> bool:
        ivf = self._index
        return bool(ivf.is_trained) and ivf.nlist * 39 * 16 >= total and ivf.ntotal > 0

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Remove ids (unknown ones are ignored); returns how many were removed."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if not len(ids) or not len(self):
            return 0
        faiss = _faiss()
        if self.kind == "hnsw":
            old_ids, old_vectors = self.export()
            keep = ~np.isin(old_ids, ids)
            if not keep.all():
                self._rebuild(old_ids[keep], old_vectors[keep])
            return int((~keep).sum())
        if self.kind == "ivf":
            # The hashtable direct map only accepts an array selector, of known ids.
            known = np.ascontiguousarray([i for i in ids.tolist() if self._has(i)], np.int64)
            if not len(known):
                return 0
            selector = faiss.IDSelectorArray(len(known), faiss.swig_ptr(known))
            return int(self._index.remove_ids(selector))
        return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def _has(self, key: int) -> bool:
        try:
            self._index.reconstruct(key)
        except RuntimeError:
            return False
        return True

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        """All ``(ids, vectors)`` held, in insertion order."""
        n = len(self)
        if not n:
            return np.zeros(0, np.int64), np.zeros((0, self.dimension), np.float32)
        faiss = _faiss()
        if self.kind == "ivf":
            lists = self._index.invlists
            ids = np.concatenate([
                faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                for i in range(self._index.nlist) if lists.list_size(i)
            ]).astype(np.int64)
            ids.sort()
            vectors = np.vstack([self._index.reconstruct(int(i)) for i in ids])
        else:
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            vectors = self._index.index.reconstruct_n(0, n)
        return ids, np.ascontiguousarray(vectors, dtype=np.float32)

    def copy(self) -> DenseIndex:
        clone = DenseIndex.__new__(DenseIndex)
        clone.__dict__.update(self.__dict__)
        clone._index = _faiss().clone_index(self._index)
        return clone

    # -- queries ----------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, vector: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest ids and their inner products, best first."""
        if k <= 0 or not len(self):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        scores, ids = self._index.search(query, min(k, len(self)))
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]

    def scores_for(self, vector: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        """Exact inner products of ``vector`` with the stored vectors of ``ids``."""
        if not len(ids):
            return np.zeros(0, np.float32)
        stored = np.vstack([self._index.reconstruct(int(i)) for i in ids])
        return stored @ np.asarray(vector, dtype=np.float32).reshape(-1)

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        _faiss().write_index(self._index, str(path))
        params = {"dimension": self.dimension, "kind": self.kind, "hnsw_m": self.hnsw_m,
                  "ef_search": self.ef_search, "nprobe": self.nprobe}
        path.with_suffix(".json").write_text(json.dumps(params))

    @classmethod
    def load(cls, path: str | Path) -> DenseIndex:
        path = Path(path)
        params = json.loads(path.with_suffix(".json").read_text())
        index = cls(**params)
        index._index = _faiss().read_index(str(path))
        if index.kind == "hnsw":
            _faiss().downcast_index(index._index.index).hnsw.efSearch = index.ef_search
        if index.kind == "ivf":
            index._index.set_direct_map_type(_faiss().DirectMap.Hashtable)
        if index._index.d != index.dimension:
            raise ValueError(f"{path}: index has {index._index.d} dims, expected {index.dimension}")
        return index


class LexicalIndex:
    """BM25 (bm25s, Lucene variant) over pre-tokenised chunks, addressed by our chunk ids.

    bm25s cannot delete, so the index is rebuilt from stored tokens on every change;
    that takes about a second per 10k chunks. Besides raw scores it gives a per-query
    normaliser (sum of the query terms' idf: the score of a document that holds each
    term once at average length), which puts BM25 on the same 0..1-ish scale as cosine.
    """

    K1 = 1.5
    B = 0.75

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self._doc_freq: dict[str, int] = {}
        self._bm25 = None

    @classmethod
    def build(cls, ids: Sequence[int], token_lists: Sequence[Sequence[str]]) -> LexicalIndex:
        if len(ids) != len(token_lists):
            raise ValueError("ids and token_lists differ in length")
        index = cls()
        index.ids = np.asarray(ids, dtype=np.int64)
        if len(ids) > 1 and not (np.diff(index.ids) > 0).all():
            raise ValueError("ids must be unique and ascending")
        doc_freq: Counter[str] = Counter()
        for tokens in token_lists:
            doc_freq.update(set(tokens))
        index._doc_freq = dict(doc_freq)
        if len(ids):
            import bm25s

            bm25 = bm25s.BM25(k1=cls.K1, b=cls.B, method="lucene")
            bm25.index([list(tokens) for tokens in token_lists], show_progress=False)
            index._bm25 = bm25
        return index

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, row_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(found, position)`` of each row id in ``self.ids`` (kept sorted at build)."""
        wanted = np.asarray(row_ids, dtype=np.int64)
        where = np.searchsorted(self.ids, wanted)
        where = np.minimum(where, max(len(self.ids) - 1, 0))
        found = self.ids[where] == wanted if len(self.ids) else np.zeros(len(wanted), bool)
        return found, where

    def idf(self, token: str) -> float:
        n, df = len(self.ids), self._doc_freq.get(token, 0)
        return math.log(1 + (n - df + 0.5) / (df + 0.5)) if df else 0.0

    def normaliser(self, query_tokens: Sequence[str]) -> float:
        """What a chunk that matched every query term once would score: the idf of each
        term, and for a term no chunk holds the idf it would have in one chunk. Charging
        unseen terms is what lets the score say a question is not about this base: a
        question that shares one common word with it scores low, not 1."""
        n = len(self.ids)
        unseen = math.log(1 + (n - 0.5) / 1.5) if n else 0.0
        return sum(self.idf(t) or unseen for t in set(query_tokens))

    def scores(self, query_tokens: Sequence[str]) -> np.ndarray:
        """BM25 score of every indexed chunk, aligned with ``self.ids``."""
        known = [t for t in dict.fromkeys(query_tokens) if t in self._doc_freq]
        if self._bm25 is None or not known:
            return np.zeros(len(self.ids), np.float32)
        return np.asarray(self._bm25.get_scores(known), dtype=np.float32)

    def search(self, query_tokens: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best ids with a positive score and their raw BM25 scores, best first."""
        scores = self.scores(query_tokens)
        return top_k(self.ids, scores, k)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "ids.npy", self.ids)
        (folder / "doc_freq.json").write_text(json.dumps(self._doc_freq, ensure_ascii=False))
        if self._bm25 is not None:
            self._bm25.save(str(folder / "bm25"))

    @classmethod
    def load(cls, folder: str | Path) -> LexicalIndex:
        folder = Path(folder)
        index = cls()
        index.ids = np.load(folder / "ids.npy")
        index._doc_freq = json.loads((folder / "doc_freq.json").read_text())
        if len(index.ids):
            import bm25s

            index._bm25 = bm25s.BM25.load(str(folder / "bm25"))
        return index


def top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` highest positive scores and their ids, best first (argpartition, not sort)."""
    if k <= 0 or not len(scores):
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k]
    part = part[scores[part] > 0]
    order = part[np.argsort(-scores[part], kind="stable")]
    return ids[order], scores[order]
