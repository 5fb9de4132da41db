"""Predicted prefix reuse: how many tokens of a prompt a backend could serve from its cache.

A prompt is known by its fingerprint: (message hash, tokens) per message, in order. For a
stored conversation the reference is the previous prompt of that conversation (stored with
it, so every replica predicts alike). A stateless request has no stored previous prompt:
``RecentPrompts`` remembers, per model, the message-prefix chains of the prompts this
process sent lately, so the prediction is the longest prefix of this prompt that one of
them began with, exactly what a prefix cache keyed by messages would hold.

Either way the reference is the previous prompt *followed by its reply*: vLLM, SGLang and
llama.cpp all keep the tokens they generated in their cache, so a reply the client sends
back unchanged is reused too (the pipeline appends it once the reply finished).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence

Fingerprint = Sequence[tuple[str, int]]


def prefix_reuse(previous: Fingerprint, current: Fingerprint) -> int:
    """Tokens at the start of ``current`` identical to the start of ``previous``."""
    reused = 0
    for old, new in zip(previous, current, strict=False):
        if old[0] != new[0]:
            break
        reused += new[1]
    return reused


class RecentPrompts:
    """A bounded LRU of message-prefix chains: entry ``k`` of a prompt stands for its first
    ``k + 1`` messages (a hash chained over their hashes), so memory grows with distinct
    prefixes, not with traffic, and never past ``capacity`` entries."""

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._chains: OrderedDict[bytes, None] = OrderedDict()

    @staticmethod
    def _chain(model: str, fingerprint: Fingerprint) -> list[bytes]:
        links, link = [], hashlib.blake2b(model.encode(), digest_size=16).digest()
        for message_hash, _ in fingerprint:
            link = hashlib.blake2b(link + message_hash.encode(), digest_size=16).digest()
            links.append(link)
        return links

    def reuse_and_remember(self, model: str, fingerprint: Fingerprint) -> int:
        """Tokens of this prompt's longest remembered prefix; then remember the prompt."""
        links = self._chain(model, fingerprint)
        reused = 0
        for link, (_, tokens) in zip(links, fingerprint, strict=True):
            if link not in self._chains:
                break
            reused += tokens
        self._remember(links)
        return reused

    def remember(self, model: str, fingerprint: Fingerprint) -> None:
        self._remember(self._chain(model, fingerprint))

    def _remember(self, links: list[bytes]) -> None:
        for link in links:
            self._chains[link] = None
            self._chains.move_to_end(link)
        while len(self._chains) > self.capacity:
            self._chains.popitem(last=False)
