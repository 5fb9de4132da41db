"""Retrieval evaluation: recall@k and MRR@k where a hit is a passage containing a gold answer."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rag.documents import Passage


@dataclass(frozen=True, slots=True)
class QAItem:
    """A question, the texts that count as its answer, and the file it was drawn from."""

    question: str
    answers: tuple[str, ...]
    source: str


def load_squad_style(path: str | Path) -> tuple[dict[str, str], list[QAItem]]:
    """Paragraphs (as ``{file name: text}``) and questions of a SQuAD-format file.

    CMRC2018 uses this format; each paragraph becomes ``<paragraph id>.txt``.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    paragraphs: dict[str, str] = {}
    items: list[QAItem] = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            source = f"{para['id']}.txt"
            paragraphs[source] = para["context"]
            for qa in para["qas"]:
                answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"] if a["text"]))
                if answers:
                    items.append(QAItem(qa["question"], answers, source))
    return paragraphs, items


@dataclass(frozen=True, slots=True)
class RetrievalScores:
    """Recall at each k and MRR@max(k), over ``questions`` questions."""

    recall: dict[int, float]
    mrr: float
    questions: int


def evaluate(search: Callable[[str, int], Sequence[Passage]], items: Sequence[QAItem],
             ks: Sequence[int] = (1, 5, 10)) -> RetrievalScores:
    """Score ``search(question, top_k)``; a hit is a passage whose text holds an answer."""
    if not items:
        raise ValueError("no questions to evaluate")
    depth = max(ks)
    first_hit: list[int | None] = []
    for item in items:
        passages = search(item.question, depth)
        rank = next((i for i, p in enumerate(passages[:depth], start=1)
                     if any(answer in p.text for answer in item.answers)), None)
        first_hit.append(rank)
    n = len(items)
    recall = {k: sum(1 for r in first_hit if r is not None and r <= k) / n for k in ks}
    mrr = sum(1 / r for r in first_hit if r is not None) / n
    return RetrievalScores(recall, mrr, n)
