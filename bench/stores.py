"""The same knowledge base on the local store (FAISS + BM25 folders) and on Milvus
(milvus-lite, embedded), side by side: write rate, search latency, and retrieval quality.

    . .venv/bin/activate
    python bench/stores.py                 # 10k chunks, 200 queries, CMRC quality (~6 min)
    python bench/stores.py --chunks 2000 --skip-quality

Write rate: N synthetic chunks (recombined CMRC sentences and English pseudo-text, 50 per
file; a file counts as 6 pages of ~2,500 characters) with precomputed vectors, so both
stores store the same rows and neither embeds: ``base.add`` from start to searchable.
Embedding is the same cost in front of either store (bench/ingestion.py measures it).

Latency: ``base.search`` with the real MiniLM query encoder, p50/p99 over the queries,
Chinese questions (lexical path: BM25 only) and English ones (hybrid: query embedding,
dense search, BM25, fusion), exact (flat) and HNSW indexes.

Quality: the CMRC2018 trial paragraphs ingested into a local base, migrated to Milvus
(``KnowledgeStores.migrate``: the same chunks and vectors), every question asked of both.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.retrieval import (  # noqa: E402
    CMRC,
    RandomEmbedder,
    latency_queries,
    search_times,
    synthetic_files,
    table,
)
from rag.embeddings import SentenceTransformerEmbedder, default_embedding_model_path  # noqa: E402
from rag.evaluation import evaluate, load_squad_style  # noqa: E402
from rag.ingest import ingest_files  # noqa: E402
from rag.knowledge_base import KnowledgeBaseStore  # noqa: E402
from rag.milvus_store import MilvusKnowledgeBaseStore  # noqa: E402
from rag.retrieval import RetrievalConfig  # noqa: E402
from rag.stores import KnowledgeStores  # noqa: E402

PAGES_PER_FILE = 6  # 50 chunks of ~300 characters


def stores(work: Path, label: str) -> KnowledgeStores:
    return KnowledgeStores(KnowledgeBaseStore(work / f"{label}-kbs"),
                           MilvusKnowledgeBaseStore(str(work / f"{label}-milvus.db"),
                                                    work / f"{label}-locks"))


def speed(embedder: SentenceTransformerEmbedder, work: Path, n_chunks: int, queries: int
          ) -> tuple[list[list[str]], list[list[str]]]:
    files = synthetic_files(n_chunks)
    vectors = RandomEmbedder()
    from dataclasses import replace

    files = [replace(f, vectors=vectors.embed([c.text for c in f.chunks]))
             for f in files]
    writes, searches = [], []
    for kind in ("flat", "hnsw"):
        for where in ("local", "milvus"):
            both = stores(work, f"{where}-{kind}")
            base = both.create("syn", RandomEmbedder(), store=where, index_kind=kind)
            started = time.perf_counter()
            base.add(files)
            took = time.perf_counter() - started
            writes.append([where, kind, f"{n_chunks / took:,.0f}",
                           f"{len(files) * PAGES_PER_FILE / took:,.0f}", f"{took:.1f} s"])
            print("  measured", writes[-1], flush=True)
            kb = both.open("syn", embedder, RetrievalConfig())
            for label, qs in latency_queries(queries):
                p50, p99 = search_times(kb, qs)
                searches.append([where, kind, label, f"{p50:.1f}", f"{p99:.1f}"])
                print("  measured", searches[-1], flush=True)
    return writes, searches


def quality(embedder: SentenceTransformerEmbedder, work: Path) -> list[list[str]]:
    paragraphs, questions = load_squad_style(CMRC)
    folder = work / "cmrc"
    folder.mkdir()
    for name, text in paragraphs.items():
        (folder / name).write_text(text, encoding="utf-8")
    both = stores(work, "quality")
    local = both.create("cmrc", embedder, store="local")
    result = ingest_files(local, sorted(folder.iterdir()))
    assert result.status == "done" and not result.errors, result
    rows = []

    def score(label: str) -> None:
        kb = both.open("cmrc", embedder)
        for mode in ("lexical", "hybrid"):
            s = evaluate(lambda q, k, m=mode: kb.search(q, top_k=k, mode=m), questions)
            rows.append([label, mode, f"{s.recall[1]:.3f}", f"{s.recall[5]:.3f}",
                         f"{s.mrr:.3f}"])
            print("  measured", rows[-1], flush=True)

    score("local")
    started = time.perf_counter()
    both.migrate("cmrc")
    print(f"  migrated {local.manifest.chunks} chunks in {time.perf_counter() - started:.1f} s")
    score("milvus-lite")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    embedder = SentenceTransformerEmbedder(default_embedding_model_path())
    with tempfile.TemporaryDirectory(prefix="ragate-stores-") as tmp:
        work = Path(tmp)
        writes, searches = speed(embedder, work, args.chunks, args.queries)
        table(f"Writing {args.chunks:,} chunks (vectors precomputed): start to searchable",
              ["store", "index", "chunks/s", "pages/s", "took"], writes)
        table(f"Search latency at {args.chunks:,} chunks, {args.queries} queries (ms)",
              ["store", "index", "queries", "p50", "p99"], searches)
        if not args.skip_quality:
            rows = quality(embedder, work)
            table("CMRC2018 trial, the same chunks and vectors in both stores",
                  ["store", "mode", "R@1", "R@5", "MRR@10"], rows)


if __name__ == "__main__":
    main()
