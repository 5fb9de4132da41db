"""Retrieval: fusion weights per language, threshold, neighbour expansion, dedupe, budget."""

from pathlib import Path

import pytest

from rag.ingest import ingest_files
from rag.retrieval import RetrievalConfig
from rag.snapshot import ChunkingConfig

SENTENCES = [f"第{i}条记录说明了编号为{i}的设备在仓库里的位置。" for i in range(40)]
STORY = "".join(SENTENCES)


@pytest.fixture
def story_kb(store, embedder, tmp_path: Path):
    kb = store.create("story", embedder, chunking=ChunkingConfig(80, 25))
    path = tmp_path / "story.txt"
    path.write_text(STORY, encoding="utf-8")
    ingest_files(kb, [path])
    return kb


def test_config_fails_fast():
    for bad in ({"top_k": 0}, {"mode": "magic"}, {"candidates": 1}, {"dense_weight_cjk": 2.0},
                {"neighbours": -1}, {"budget": 0}, {"fusion": "max"}, {"rrf_k": 0}):
        with pytest.raises(ValueError):
            RetrievalConfig(**bad)


def test_dense_weight_follows_the_query_language(kb):
    retriever = kb.retriever(RetrievalConfig(dense_weight_latin=0.6, dense_weight_cjk=0.1))
    assert retriever.dense_weight("what is the capital") == pytest.approx(0.6)
    assert retriever.dense_weight("首都是哪里") == pytest.approx(0.1)
    # letters only: B, M and three Han characters (digits are no script)
    assert retriever.dense_weight("BM25是什么") == pytest.approx(0.6 * 2 / 5 + 0.1 * 3 / 5)
    assert retriever.dense_weight("x", RetrievalConfig(mode="lexical")) == 0.0
    assert retriever.dense_weight("x", RetrievalConfig(mode="dense")) == 1.0


def test_neighbours_are_merged_without_the_overlap(story_kb):
    hit = story_kb.search("编号为17的设备在哪里", top_k=1, neighbours=1)[0]
    assert "第17条记录" in hit.text
    assert len(hit.chunk_ids) == 3
    # Merged text is a contiguous piece of the original: no repeated overlap.
    assert hit.text in STORY
    alone = story_kb.search("编号为17的设备在哪里", top_k=1, neighbours=0)[0]
    assert alone.text in hit.text and len(alone.text) < len(hit.text)
    assert alone.chunk_ids == (alone.chunk_id,)


def test_overlapping_hits_become_one_passage(story_kb):
    passages = story_kb.search("设备 仓库 位置 记录", top_k=10, neighbours=2)
    spans = [set(p.chunk_ids) for p in passages]
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            assert not a & b  # no chunk appears in two passages


def test_score_threshold(story_kb):
    everything = story_kb.search("编号为17的设备", top_k=5)
    assert len(everything) > 1
    top = everything[0].score
    # a passage's score is rounded to 6 places: just under it, not at it
    strict = story_kb.search("编号为17的设备", top_k=5, score_threshold=top - 1e-6)
    assert [p.chunk_id for p in strict] == [everything[0].chunk_id]
    assert story_kb.search("完全无关的词语组合", score_threshold=0.99) == []
    assert story_kb.search("   ") == []


def test_identical_copies_are_deduplicated(kb, tmp_path: Path):
    for name, extra in (("a.txt", ""), ("b.txt", " ")):
        path = tmp_path / name
        path.write_text("重复的内容出现在两个文件里。" + extra, encoding="utf-8")
        ingest_files(kb, [path])
    passages = kb.search("重复的内容", top_k=5)
    assert len(passages) == 1


def test_budget_limits_the_context(story_kb):
    unlimited = story_kb.search("设备的位置", top_k=5)
    total = sum(len(p.text) for p in unlimited)
    budget = total // 2
    limited = story_kb.search("设备的位置", top_k=5, budget=budget)
    assert 0 < sum(len(p.text) for p in limited) <= budget
    tiny = story_kb.search("编号为17的设备", top_k=5, budget=10)
    assert len(tiny) == 1 and len(tiny[0].text) == 10  # the best passage, cut to fit


def test_budget_in_tokens(story_kb):
    count = lambda s: len(s) // 2  # noqa: E731 - any token counter
    retriever = story_kb.retriever(RetrievalConfig(budget=60), length_function=count)
    passages = retriever.retrieve("设备的位置")
    assert sum(count(p.text) for p in passages) <= 60


def test_english_queries_use_dense_scores(kb, tmp_path: Path):
    path = tmp_path / "en.txt"
    path.write_text("Vector databases store embeddings.\n\nBM25 ranks documents by terms.",
                    encoding="utf-8")
    ingest_files(kb, [path])
    passage = kb.search("vector embeddings", top_k=1)[0]
    assert passage.dense_score is not None and passage.lexical_score is not None
    rrf = kb.search("vector embeddings", top_k=1, fusion="rrf")[0]
    assert rrf.source == "en.txt"
