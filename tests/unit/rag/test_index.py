"""Dense (FAISS) and lexical (BM25) indexes: search, delete, persistence."""

from pathlib import Path

import numpy as np
import pytest

from rag.index import DenseIndex, LexicalIndex
from rag.tokenization import cjk_share, tokenize


def unit_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_dense_search_delete_and_reload(kind: str, tmp_path: Path):
    vectors = unit_vectors(600, 16)
    ids = np.arange(1000, 1600)
    index = DenseIndex(16, kind)  # type: ignore[arg-type]
    index.add(ids, vectors)
    assert len(index) == 600
    found, scores = index.search(vectors[7], 3)
    assert found[0] == 1007 and scores[0] == pytest.approx(1.0, abs=1e-4)

    assert index.remove([1007, 1008, 424242]) == 2
    assert len(index) == 598
    found, _ = index.search(vectors[7], 5)
    assert 1007 not in found.tolist()
    assert index.scores_for(vectors[9], [1009])[0] == pytest.approx(1.0, abs=1e-4)

    index.save(tmp_path / "dense.faiss")
    loaded = DenseIndex.load(tmp_path / "dense.faiss")
    assert (loaded.kind, len(loaded)) == (kind, 598)
    assert loaded.search(vectors[9], 1)[0][0] == 1009
    exported_ids, exported = loaded.export()
    assert set(exported_ids.tolist()) == set(ids.tolist()) - {1007, 1008}
    assert exported.shape == (598, 16)


def test_dense_copy_is_independent():
    index = DenseIndex(8)
    index.add([1, 2], unit_vectors(2, 8))
    clone = index.copy()
    clone.remove([1])
    assert (len(index), len(clone)) == (2, 1)


def test_dense_rejects_bad_input():
    with pytest.raises(ValueError):
        DenseIndex(0)
    with pytest.raises(ValueError):
        DenseIndex(8, "lsh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        DenseIndex(8).add([1, 2], unit_vectors(2, 4))
    assert DenseIndex(8).search(unit_vectors(1, 8)[0], 5)[0].size == 0


def test_tokenizer_mixes_jieba_and_latin_words():
    tokens = tokenize("北京是中华人民共和国的首都。The Quick brown-fox, 2024年")
    expected = {"北京", "首都", "中华人民共和国", "共和国", "the", "quick", "fox", "2024", "年"}
    assert expected <= set(tokens)
    assert "。" not in tokens and "," not in tokens
    assert cjk_share("什么是BM25") == pytest.approx(3 / 5)  # digits are no script
    assert cjk_share("1990年发生了什么？") == 1.0
    assert cjk_share("!!!") == 0.0


def test_lexical_ranks_and_normalises(tmp_path: Path):
    texts = ["北京是中国的首都", "上海是中国最大的城市", "the cat sat on the mat", "dogs and cats"]
    index = LexicalIndex.build([10, 20, 30, 40], [tokenize(t) for t in texts])
    ids, scores = index.search(tokenize("中国的首都在哪里"), 3)
    assert ids[0] == 10 and scores[0] > scores[1]
    assert index.search(tokenize("cat"), 5)[0].tolist() == [30]
    assert index.search(["never-seen"], 5)[0].size == 0
    assert index.normaliser(tokenize("cat")) > 0
    index.save(tmp_path / "lex")
    loaded = LexicalIndex.load(tmp_path / "lex")
    assert loaded.search(tokenize("cat"), 5)[0].tolist() == [30]
    found, where = loaded.positions([40, 5])
    assert found.tolist() == [True, False] and loaded.ids[where[0]] == 40


def test_lexical_empty_and_unsorted():
    empty = LexicalIndex.build([], [])
    assert len(empty) == 0 and empty.search(["a"], 3)[0].size == 0
    with pytest.raises(ValueError, match="ascending"):
        LexicalIndex.build([2, 1], [["a"], ["b"]])
