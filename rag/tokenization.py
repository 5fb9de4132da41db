"""Lexical tokenisation for BM25: jieba for CJK runs, lowercase word tokens for everything else."""

from __future__ import annotations

import logging
import re
import threading

from rag.cleaning import is_cjk

# Han ideographs (and the compatibility block) go to jieba; kana/hangul are kept per run.
_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUN = re.compile(rf"[{_HAN}]+|[^\W_{_HAN}]+")
_HAN_CHAR = re.compile(rf"[{_HAN}]")
_jieba_lock = threading.Lock()
_jieba_ready = False


def _jieba():
    global _jieba_ready
    import jieba

    if not _jieba_ready:
        # jieba builds its prefix dictionary on first use and logs about it at INFO.
        with _jieba_lock:
            if not _jieba_ready:
                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _jieba_ready = True
    return jieba


def tokenize(text: str) -> list[str]:
    """Tokens for indexing and querying (the same function must serve both).

    Han runs are cut with ``jieba.lcut_for_search``, which also emits the shorter words
    inside long ones (中华人民共和国 → 中华, 人民, 共和国, …) so partial matches score.
    """
    tokens: list[str] = []
    for run in _RUN.findall(text):
        if _HAN_CHAR.match(run):
            tokens.extend(t for t in _jieba().lcut_for_search(run) if t.strip())
        else:
            tokens.append(run.lower())
    return tokens


def cjk_share(text: str) -> float:
    """Share of CJK characters among the letters of ``text`` (0.0 for no letters). Digits
    are no script: "1990年…" is a Chinese question, and counting its digits as Latin gave
    it part of the English dense weight, which with MiniLM (English-only) only adds noise."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for ch in letters if is_cjk(ch)) / len(letters)
