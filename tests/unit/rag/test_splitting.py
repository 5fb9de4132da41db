"""Splitting: sentence-aware separators, sizes in characters or tokens, ordered chunk ids."""

import pytest

from rag.documents import Document, DocumentMetadata
from rag.splitting import TextSplitter, merge_overlapping

ZH = (
    "北京是中国的首都。上海是中国最大的城市，也是经济中心！广州历史悠久吗？"
    "深圳是一座年轻的城市；杭州有西湖。"
)


def test_bad_arguments_fail_fast():
    with pytest.raises(ValueError, match="chunk_overlap"):
        TextSplitter(100, 100)
    with pytest.raises(ValueError, match="chunk_size"):
        TextSplitter(0, 0)
    with pytest.raises(ValueError, match="length_function"):
        TextSplitter(100, 10, unit="tokens")
    with pytest.raises(ValueError, match="unit"):
        TextSplitter(100, 10, unit="words")  # type: ignore[arg-type]


def test_chinese_chunks_end_at_sentence_punctuation():
    pieces = [p for p, _ in TextSplitter(30, 0).split_text(ZH * 3)]
    assert all(len(p) <= 30 for p in pieces)
    assert all(p[-1] in "。！？；" for p in pieces)
    assert "".join(pieces) == ZH * 3


def test_english_chunks_end_at_sentence_ends():
    text = " ".join(f"Sentence number {i} is here." for i in range(30))
    pieces = [p for p, _ in TextSplitter(80, 0).split_text(text)]
    assert all(len(p) <= 80 and p.endswith(".") for p in pieces)


def test_offsets_point_into_the_text_even_when_repetitive():
    text = "同一句话重复很多次。" * 60
    splitter = TextSplitter(100, 30)
    pieces = splitter.split_text(text)
    for piece, start in pieces:
        assert text[start : start + len(piece)] == piece
    starts = [s for _, s in pieces]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_chunk_ids_keep_document_order_across_pages():
    meta = lambda page: DocumentMetadata("a.pdf", "h", page)  # noqa: E731
    docs = [Document(ZH * 2, meta(1)), Document(ZH * 2, meta(2))]
    chunks = TextSplitter(40, 10).split_documents(docs, "doc1")
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert [c.id for c in chunks] == sorted(c.id for c in chunks)
    assert chunks[0].id == "doc1:000000"
    assert {c.metadata.page for c in chunks} == {1, 2}
    pages = [c.metadata.page for c in chunks]
    assert pages == sorted(pages)


def test_token_units_use_the_given_counter():
    words = " ".join(f"w{i}" for i in range(100))
    splitter = TextSplitter(10, 2, unit="tokens", length_function=lambda s: len(s.split()))
    pieces = [p for p, _ in splitter.split_text(words)]
    assert all(len(p.split()) <= 10 for p in pieces)
    assert len(pieces) >= 10


def test_merging_neighbours_drops_the_overlap():
    text = "".join(f"第{i}句话在这里。" for i in range(40))
    splitter = TextSplitter(60, 20)
    pieces = splitter.split_text(text)
    assert len(pieces) > 3
    merged = merge_overlapping([p for p, _ in pieces],
                               [(1, s, s + len(p)) for p, s in pieces])
    assert merged == text


def test_merging_without_offsets_finds_the_overlap():
    a, b = "The first chunk ends with shared words", "ends with shared words and goes on."
    assert merge_overlapping([a, b], [(1, -1, -1), (2, -1, -1)]) == (
        "The first chunk ends with shared words and goes on."
    )
