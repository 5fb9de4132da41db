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
def test_onnx_runtime_gives_torchs_vectors_and_int8_nearly_them():
    from rag import onnx_encoder

    if not onnx_encoder.eligible(default_embedding_model_path()):
        pytest.skip("onnx or onnxruntime is not installed")
    default = SentenceTransformerEmbedder()  # auto: the int8 model on ONNX Runtime
    exact = SentenceTransformerEmbedder(backend="onnx")
    slow = SentenceTransformerEmbedder(backend="torch")
    assert (default.backend, exact.backend, slow.backend) == ("onnx-int8", "onnx", "torch")
    texts = ["a cat sat on the mat", "叉车钥匙存放在三十八号柜子里。", "x " * 400, "short"]
    a, b, c = exact.embed(texts), slow.embed(texts), default.embed(texts)
    assert a.shape == b.shape == c.shape == (4, 384)
    assert np.allclose(np.sum(a * b, axis=1), 1.0, atol=1e-4)  # the same vectors
    assert np.all(np.sum(c * b, axis=1) > 0.98)  # int8: near them
    alone = np.vstack([default.embed([t]) for t in texts])
    assert np.array_equal(alone, c), "a text's int8 vector does not depend on its batch"
    assert onnx_encoder.onnx_path(exact.path).is_file()  # exported once, kept for the next
    assert onnx_encoder.quantized_path(exact.path).is_file()
    # what matters: the int8 model ranks as the float one does
    docs = ["The forklift keys are kept in locker 38.", "Lunch is served from noon.",
            "Invoices are paid within thirty days.", "The fire exit is behind the kitchen."]
    questions = ["where are the forklift keys?", "when is lunch?", "how fast are bills paid?",
                 "how do I get out if there is a fire?"]
    for model in (default, slow):
        scores = model.embed(questions) @ model.embed(docs).T
        assert list(scores.argmax(axis=1)) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="backend"):
        SentenceTransformerEmbedder(backend="gpu")
