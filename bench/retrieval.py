"""Retrieval benchmark: CMRC2018 recall/MRR, PDF and embedding throughput, query latency.

    . .venv/bin/activate
    python bench/retrieval.py                    # everything, ~10 minutes on 2 busy cores
    python bench/retrieval.py --skip-latency     # quality and throughput only
    python bench/retrieval.py --sizes 10000      # latency at 10k chunks only

Quality: every CMRC2018 trial paragraph becomes a ``.txt`` file in a fresh knowledge base
(default chunking, the bundled all-MiniLM-L6-v2); each question is asked in ``lexical``
(BM25 + jieba), ``dense`` (MiniLM) and ``hybrid`` (the default: language-weighted fusion)
mode, plus naive RRF(k=60) and a few fixed CJK dense weights for comparison. A hit is a
returned passage (after neighbour expansion, 1 chunk each side) that contains a gold answer.

Throughput: generated PDFs (English pages of ~2,500 characters, and Chinese ones if a
CJK font is installed) through load + clean + split (``prepare_file``), embedding
excluded; and chunks/s embedded while building the CMRC base.

Latency: a base of N synthetic chunks (recombined CMRC sentences, and English pseudo-text)
with random unit vectors, opened with the real MiniLM; p50/p99 of ``kb.search`` for CMRC
questions (Chinese: lexical path) and English questions (query embedding + FAISS + BM25),
with the exact (flat) index and with HNSW.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.documents import Chunk, ChunkMetadata, chunk_id, make_doc_id  # noqa: E402
from rag.embeddings import DEFAULT_MODEL_NAME, SentenceTransformerEmbedder  # noqa: E402
from rag.evaluation import evaluate, load_squad_style  # noqa: E402
from rag.ingest import ingest_files, prepare_file  # noqa: E402
from rag.knowledge_base import KnowledgeBaseStore, PreparedFile  # noqa: E402
from rag.retrieval import RetrievalConfig  # noqa: E402

CMRC = ROOT.parent / "shared" / "data" / "cmrc2018" / "cmrc2018_trial.json"


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E501, E731
    print(f"\n{title}\n" + line(header) + "\n|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    sys.stdout.flush()


def quality(embedder: SentenceTransformerEmbedder, work: Path) -> float:
    paragraphs, questions = load_squad_style(CMRC)
    folder = work / "cmrc"
    folder.mkdir()
    for name, text in paragraphs.items():
        (folder / name).write_text(text, encoding="utf-8")
    kb = KnowledgeBaseStore(work / "kbs").create("cmrc", embedder)
    started = time.perf_counter()
    result = ingest_files(kb, sorted(folder.iterdir()))
    elapsed = time.perf_counter() - started
    assert result.status == "done" and not result.errors, result
    chunks = result.chunks_embedded

    cache: dict[str, np.ndarray] = {}  # embed each question once across the modes
    real_embed = embedder.embed

    def cached(texts):
        if len(texts) != 1:
            return real_embed(texts)
        if texts[0] not in cache:
            cache[texts[0]] = real_embed(texts)
        return cache[texts[0]]

    embedder.embed = cached  # type: ignore[method-assign]
    rows = []
    variants = [
        ("BM25 (jieba)", {"mode": "lexical"}),
        ("dense (MiniLM)", {"mode": "dense"}),
        ("hybrid (default)", {}),
        ("hybrid, naive RRF k=60", {"fusion": "rrf", "dense_weight_cjk": 0.5}),
    ] + [(f"hybrid, CJK dense weight {w}", {"dense_weight_cjk": w}) for w in (0.02, 0.1, 0.3)]
    for label, overrides in variants:
        scores = evaluate(lambda q, k, o=overrides: kb.search(q, top_k=k, **o), questions)
        rows.append([label, f"{scores.recall[1]:.3f}", f"{scores.recall[5]:.3f}",
                     f"{scores.recall[10]:.3f}", f"{scores.mrr:.3f}"])
    embedder.embed = real_embed  # type: ignore[method-assign]
    c = kb.manifest.chunking
    table(f"CMRC2018 trial: {len(questions)} questions, {len(paragraphs)} paragraphs, "
          f"{chunks} chunks ({c.size}/{c.overlap} {c.unit}), neighbours=1",
          ["retriever", "R@1", "R@5", "R@10", "MRR@10"], rows)
    return chunks / elapsed


def pdf_throughput(work: Path, pages: int) -> list[list[str]]:
    from fpdf import FPDF

    sys.path.insert(0, str(ROOT / "tests" / "unit" / "rag"))
    from conftest import find_cjk_font

    from rag.splitting import TextSplitter

    rng = random.Random(1)
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", Path(__file__).read_text())]
    splitter = TextSplitter()
    out = []
    kinds = [("English", None)]
    font = find_cjk_font(bundled=False)  # CMRC's text needs a whole font
    if font:
        paragraphs, _ = load_squad_style(CMRC)
        kinds.append(("Chinese", font))
    for label, cjk in kinds:
        pdf = FPDF()
        if cjk:
            pdf.add_font("cjk", fname=str(cjk))
        texts = list(paragraphs.values()) if cjk else None
        for _ in range(pages):
            pdf.add_page()
            pdf.set_font("cjk" if cjk else "helvetica", size=10)
            if cjk:
                body = "".join(rng.sample(texts, 3))[:1400]
            else:
                body = " ".join(rng.choice(words) for _ in range(420)).capitalize() + "."
            pdf.multi_cell(0, 5, body)
        path = work / f"{label}.pdf"
        pdf.output(str(path))
        data = path.read_bytes()
        started = time.perf_counter()
        prepared = prepare_file(data, path.name, splitter)
        elapsed = time.perf_counter() - started
        chars = sum(len(c.text) for c in prepared.chunks) // max(1, prepared.pages)
        out.append([f"PDF {label}, ~{chars} chars/page", f"{prepared.pages / elapsed:.1f} pages/s",
                    f"{prepared.pages} pages in {elapsed:.2f} s"])
    return out


class RandomEmbedder:
    """Stands in for MiniLM while filling a synthetic base: same name and dimension."""

    name = DEFAULT_MODEL_NAME
    dimension = 384

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def embed(self, texts):
        v = self.rng.standard_normal((len(texts), self.dimension)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def synthetic_files(n_chunks: int, per_file: int = 50) -> list[PreparedFile]:
    paragraphs, _ = load_squad_style(CMRC)
    sentences = [s for p in paragraphs.values() for s in re.findall(r"[^。！？]+[。！？]", p)]
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(30000)]
    weights = [1 / (i + 1) for i in range(len(vocab))]  # Zipf-like, like real text
    files, made = [], 0
    while made < n_chunks:
        source = f"synthetic-{len(files):06d}.txt"
        doc_id = make_doc_id(source, source)
        chunks = []
        for ordinal in range(min(per_file, n_chunks - made)):
            if ordinal % 2:
                text = " ".join(rng.choices(vocab, weights, k=45))
            else:
                text = "".join(rng.sample(sentences, 5))[:300]
            meta = ChunkMetadata(source, None, -1, -1)
            chunks.append(Chunk(chunk_id(doc_id, ordinal), doc_id, ordinal, text, meta))
        made += len(chunks)
        files.append(PreparedFile(source, source, 1, chunks))
    return files


def latency_queries(queries: int) -> list[tuple[str, list[str]]]:
    """CMRC questions (Chinese: the lexical path) and English pseudo-queries (hybrid)."""
    _, questions = load_squad_style(CMRC)
    rng = random.Random(2)
    return [("Chinese (lexical path)", [q.question for q in questions[:queries]]),
            ("English (hybrid)", [" ".join(f"w{rng.randrange(2000)}" for _ in range(6))
                                  for _ in range(queries)])]


def search_times(kb, queries: list[str]) -> tuple[float, float]:
    """p50 and p99 of ``kb.search`` in ms, after ten warm-up queries (caches, jieba)."""
    for q in queries[:10]:
        kb.search(q)
    times = []
    for q in queries:
        t = time.perf_counter()
        kb.search(q)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def latency(embedder: SentenceTransformerEmbedder, work: Path, sizes: list[int],
            queries: int) -> list[list[str]]:
    rows = []
    for size in sizes:
        for kind in ("flat", "hnsw"):
            store = KnowledgeBaseStore(work / f"lat-{size}-{kind}")
            base = store.create("syn", RandomEmbedder(), index_kind=kind)
            started = time.perf_counter()
            base.add(synthetic_files(size))
            build = time.perf_counter() - started
            kb = store.open("syn", embedder, RetrievalConfig())
            for label, qs in latency_queries(queries):
                p50, p99 = search_times(kb, qs)
                rows.append([f"{size:,}", kind, label, f"{p50:.1f}", f"{p99:.1f}",
                             f"{build:.0f} s"])
                print("  measured", rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--pdf-pages", type=int, default=60)
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()

    embedder = SentenceTransformerEmbedder()
    with tempfile.TemporaryDirectory(prefix="ragate-bench-") as tmp:
        work = Path(tmp)
        throughput = []
        if not args.skip_quality:
            rate = quality(embedder, work)
            throughput.append(["embedding CMRC chunks (MiniLM, CPU)", f"{rate:.1f} chunks/s",
                               "load + clean + split + embed + index"])
        throughput += pdf_throughput(work, args.pdf_pages)
        table("Ingestion throughput", ["what", "rate", "detail"], throughput)
        if not args.skip_latency and args.sizes:
            rows = latency(embedder, work, args.sizes, args.queries)
            table("Query latency, kb.search (top 5, neighbours 1), ms",
                  ["chunks", "index", "queries", "p50", "p99", "build"], rows)


if __name__ == "__main__":
    main()
