"""The bundled MiniLM model, loaded by path and offline."""

import numpy as np
import pytest

from rag.embeddings import (
    DEFAULT_MODEL_NAME,
    Embedder,
    SentenceTransformerEmbedder,
    check_embeddings,
    default_embedding_model_path,
)


def test_default_model_folder_is_found():
    path = default_embedding_model_path()
    assert (path / "modules.json").is_file() and (path / "model.safetensors").is_file()


def test_check_embeddings():
    with pytest.raises(ValueError, match="shape"):
        check_embeddings(np.zeros((2, 3)), 2, 4)
    with pytest.raises(ValueError, match="non-finite"):
        check_embeddings(np.full((1, 2), np.nan), 1, 2)


@pytest.mark.slow
def test_minilm_embeds_normalised_batches(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embedder = SentenceTransformerEmbedder(batch_size=2)
    assert isinstance(embedder, Embedder)
    assert (embedder.name, embedder.dimension) == (DEFAULT_MODEL_NAME, 384)
    vectors = embedder.embed(["a cat sat on the mat", "a kitten sat on a rug", "stock prices"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert embedder.embed([]).shape == (0, 384)
    assert embedder.count_tokens("hello world") == 2


def test_missing_model_folder_fails_fast(tmp_path):
    with pytest.raises(FileNotFoundError):
        SentenceTransformerEmbedder(tmp_path / "nope")
    with pytest.raises(ValueError):
        SentenceTransformerEmbedder(batch_size=0)


@pytest.mark.slow
def test_onnx_runtime_gives_torchs_vectors():
    from rag import onnx_encoder

    if not onnx_encoder.eligible(default_embedding_model_path()):
        pytest.skip("onnx or onnxruntime is not installed")
    fast = SentenceTransformerEmbedder()  # auto: ONNX Runtime when it can
    slow = SentenceTransformerEmbedder(backend="torch")
    assert (fast.backend, slow.backend) == ("onnx", "torch")
    texts = ["a cat sat on the mat", "叉车钥匙存放在三十八号柜子里。", "x " * 400, "short"]
    a, b = fast.embed(texts), slow.embed(texts)
    assert a.shape == b.shape == (4, 384)
    assert np.allclose(np.sum(a * b, axis=1), 1.0, atol=1e-4)  # the same vectors
    assert onnx_encoder.onnx_path(fast.path).is_file()  # exported once, kept for the next
    with pytest.raises(ValueError, match="backend"):
        SentenceTransformerEmbedder(backend="gpu")
