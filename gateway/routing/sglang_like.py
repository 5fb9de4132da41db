"""``sglang_like``: SGLang Model Gateway's cache-aware policy, reproduced as a baseline.

As published for its router: if the load is imbalanced (max − min > ``balance_abs`` (64)
and max > ``balance_rel`` (1.5) × min), route to the least loaded; otherwise match the
request text against each worker's approximate tree; if the best match covers more than
``cache_threshold`` (0.3) of the text, route there, else to the worker with the smallest
tree, whatever its load. The text of a chat request is its first message only. The
chosen worker's tree takes the text. Kept as close to that as our block index allows
(16-character blocks stand in for its character-level radix tree) so the benchmark
compares against it honestly.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.routing.hashing import block_hashes
from gateway.routing.policies import RoutingPolicy
from gateway.routing.prefix_index import PrefixIndex
from gateway.routing.views import EndpointView, RoutingRequest


class SglangLike(RoutingPolicy):
    uses_prompt = True

    def __init__(
        self,
        *,
        cache_threshold: float = 0.3,
        balance_abs: int = 64,
        balance_rel: float = 1.5,
        block_chars: int = 16,
        max_blocks: int = 200_000,
    ) -> None:
        self.cache_threshold = cache_threshold
        self.balance_abs = balance_abs
        self.balance_rel = balance_rel
        self.block_chars = block_chars
        self.index = PrefixIndex(max_blocks)

    def choose(self, endpoints: Sequence[EndpointView], request: RoutingRequest) -> EndpointView:
        loads = {e.name: e.load for e in endpoints}
        high, low = max(loads.values()), min(loads.values())
        text = request.first_message if request.first_message is not None else (
            request.prompt or "")
        blocks = block_hashes(text, self.block_chars)
        if high - low > self.balance_abs and high > self.balance_rel * low:
            chosen = min(endpoints, key=lambda e: loads[e.name])
        else:
            best = max(endpoints, key=lambda e: self.index.match(e.name, blocks))
            matched = self.index.match(best.name, blocks) * self.block_chars
            if text and matched / len(text) > self.cache_threshold:
                chosen = best
            else:
                chosen = min(endpoints, key=lambda e: self.index.size(e.name))
        self.index.insert(chosen.name, blocks)
        return chosen

    def forget(self, name: str) -> None:
        self.index.forget(name)
