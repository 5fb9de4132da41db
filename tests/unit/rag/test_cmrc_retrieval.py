"""Retrieval quality on CMRC2018 (trial): paragraphs as .txt files, the real MiniLM embedder,
hybrid retrieval must find a passage holding the answer in the top 5 for >= 95%, with the
calibrated threshold on, and that threshold must leave most off-topic instructions
(LLaMA-Factory's alpaca demos) without any passage."""

import json
from pathlib import Path

import pytest

from rag.embeddings import SentenceTransformerEmbedder
from rag.evaluation import evaluate, load_squad_style
from rag.ingest import ingest_files
from rag.knowledge_base import KnowledgeBaseStore

DATA = Path(__file__).resolve().parents[2] / "data"
CMRC = DATA / "cmrc2018" / "cmrc2018_trial.json"


@pytest.mark.slow
def test_hybrid_recall_at_5_on_cmrc2018(tmp_path: Path):
    paragraphs, questions = load_squad_style(CMRC)
    folder = tmp_path / "paragraphs"
    folder.mkdir()
    for name, text in paragraphs.items():
        (folder / name).write_text(text, encoding="utf-8")
    store = KnowledgeBaseStore(tmp_path / "kbs")
    # A 300-character Chinese chunk is ~300 MiniLM tokens; embedding at 128 halves the
    # test's time on 2 cores and changes nothing here: Chinese queries get a dense weight
    # of 0 (bench/retrieval.py measures the full-length model).
    kb = store.create("cmrc", SentenceTransformerEmbedder(max_seq_length=128))
    result = ingest_files(kb, sorted(folder.iterdir()))
    assert result.status == "done" and not result.errors
    assert kb.manifest.documents == len(paragraphs)

    scores = evaluate(lambda q, k: kb.search(q, top_k=k), questions, ks=(1, 5))
    print(f"CMRC2018 trial hybrid: R@1={scores.recall[1]:.3f} R@5={scores.recall[5]:.3f}")
    assert scores.questions > 1000
    assert scores.recall[5] >= 0.95
    assert scores.recall[1] >= 0.90

    # off-topic: instructions that have nothing to do with these Wikipedia paragraphs
    for name, least in (("alpaca_zh_demo.json", 0.35), ("alpaca_en_demo.json", 0.4)):
        rows = json.loads((DATA / "llamafactory" / name).read_text(encoding="utf-8"))
        silent = sum(not kb.search(r["instruction"]) for r in rows) / len(rows)
        print(f"{name}: {silent:.0%} of {len(rows)} instructions get no passage")
        assert silent >= least
