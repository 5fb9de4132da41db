"""Stable hashes: identical in every process (Python's ``hash`` is salted per process)."""

from __future__ import annotations

import hashlib


def stable_hash(data: str | bytes) -> int:
    raw = data.encode() if isinstance(data, str) else data
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


def block_hashes(text: str, block_chars: int) -> list[int]:
    """Chained hashes of the full ``block_chars`` blocks of ``text``: block i's hash covers
    blocks 0..i, so equal hashes mean an equal prefix (as in vLLM's prefix cache)."""
    out: list[int] = []
    previous = b""
    for start in range(0, len(text) - block_chars + 1, block_chars):
        digest = hashlib.blake2b(previous + text[start:start + block_chars].encode(),
                                 digest_size=8).digest()
        out.append(int.from_bytes(digest, "big"))
        previous = digest
    return out
