"""An approximate prefix index per backend: chained block hashes, LRU, a hard size cap.

It approximates each backend's prefix cache the way vLLM builds it: a prompt is cut into
fixed-size blocks (characters here, since the router does not tokenize), and block i is
known by a hash chained over blocks 0..i, so "the first k blocks are cached" is k hash
lookups. Every entry (backend, block) sits in one LRU order; inserting past ``max_blocks``
evicts the least recently used entries of any backend, so memory is bounded by
``max_blocks`` entries whatever the workload (the unbounded trie that took vLLM's
production-stack router down is the failure this avoids).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence


class PrefixIndex:
    """Also counts, per block, how many different sessions sent it (approximately: a
    count that grows whenever the sender differs from the last one). A block sent by
    several sessions is a *shared* prefix (a common system prompt): every backend will
    hold it soon, so it should not attract routing."""

    def __init__(self, max_blocks: int = 200_000) -> None:
        if max_blocks < 1:
            raise ValueError("max_blocks must be at least 1")
        self.max_blocks = max_blocks
        self._lru: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._senders: OrderedDict[int, tuple[int, int]] = OrderedDict()  # block -> (last, n)

    def __len__(self) -> int:
        return len(self._lru)

    def size(self, backend: str) -> int:
        return self._sizes.get(backend, 0)

    def match(self, backend: str, blocks: Sequence[int]) -> int:
        """How many leading ``blocks`` the backend is believed to hold."""
        n = 0
        for block in blocks:
            if (backend, block) not in self._lru:
                break
            n += 1
        return n

    def shared_prefix(self, blocks: Sequence[int], sender: int, min_senders: int = 2) -> int:
        """How many leading blocks are not ``sender``'s own: sent by at least
        ``min_senders`` sessions, or last sent by another session."""
        n = 0
        for block in blocks:
            record = self._senders.get(block)
            if record is None or (record[1] < min_senders and record[0] == sender):
                break
            n += 1
        return n

    def insert(self, backend: str, blocks: Iterable[int], sender: int = 0) -> None:
        for block in blocks:
            last, count = self._senders.get(block, (None, 0))
            self._senders[block] = (sender, count + (last != sender))
            self._senders.move_to_end(block)
            key = (backend, block)
            if key in self._lru:
                self._lru.move_to_end(key)
            else:
                self._lru[key] = None
                self._sizes[backend] = self._sizes.get(backend, 0) + 1
        while len(self._lru) > self.max_blocks:
            (evicted, _), _ = self._lru.popitem(last=False)
            self._sizes[evicted] -= 1
        while len(self._senders) > self.max_blocks:
            self._senders.popitem(last=False)

    def shrink(self, backend: str, fraction: float) -> int:
        """Forget the oldest ``fraction`` of a backend's entries (its cache is smaller than
        we believed); returns how many were dropped."""
        target = int(self.size(backend) * fraction)
        if target <= 0:
            return 0
        victims = [key for key in self._lru if key[0] == backend][:target]
        for key in victims:
            del self._lru[key]
        self._sizes[backend] -= len(victims)
        return len(victims)

    def forget(self, backend: str) -> None:
        for key in [k for k in self._lru if k[0] == backend]:
            del self._lru[key]
        self._sizes.pop(backend, None)
