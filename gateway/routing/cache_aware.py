"""``cache_aware``: the longest cached prefix wins, within a load bound; misses spread.

For each request, over the *full* templated prompt (system + history + new message):
1. load bound: an endpoint may take the request only if its load (our in-flight count, or
   the backend's own queue when that is longer) stays within
   ``ceil((1 + epsilon) * (total + 1) / n) + load_slack``: the absolute slack keeps a
   conversation on its cache through the ordinary swings of a few requests in flight;
2. the leading blocks that are not this session's own (sent by several sessions, or last
   by another one: a shared system prompt or persona) are set aside: every backend ends
   up holding them, so they must not attract traffic (that is how one persona sent all
   of a prefix router's traffic to one replica);
3. among the endpoints within the bound, the one holding the most *private* leading
   blocks (this conversation's own history) wins; ties go to the less loaded;
4. when no endpoint holds any private block (a new conversation, or an evicted one), the
   request goes to its session's home: bounded consistent hashing on the session key
   (else the first user message), so misses spread by key instead of piling onto one
   backend, and a conversation's first turn lands where its later turns will follow;
5. the chosen endpoint's index takes the prompt's blocks.
A backend whose KV cache is nearly full (``kv_usage`` ≥ ``kv_high``) counts as one more
request of load. A hint (the backend another replica used for this session) counts as a
full match when the local index knows less.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from gateway.routing.hashing import block_hashes, stable_hash
from gateway.routing.policies import RoutingPolicy
from gateway.routing.prefix_index import PrefixIndex
from gateway.routing.session import bounded_walk, load_cap, load_of
from gateway.routing.views import EndpointView, RoutingRequest


class CacheAware(RoutingPolicy):
    uses_prompt = True
    sticky = True

    def __init__(
        self,
        *,
        block_chars: int = 64,
        max_blocks: int = 200_000,
        epsilon: float = 0.25,
        load_slack: int = 2,
        kv_high: float = 0.95,
        min_senders: int = 2,
    ) -> None:
        if block_chars < 1 or epsilon <= 0:
            raise ValueError("block_chars must be >= 1 and epsilon > 0")
        self.block_chars = block_chars
        self.epsilon = epsilon
        self.load_slack = load_slack
        self.kv_high = kv_high
        self.min_senders = min_senders
        self.index = PrefixIndex(max_blocks)
        self._predicted: OrderedDict[str, tuple[str, int, int]] = OrderedDict()

    def _load(self, e: EndpointView) -> EndpointView:
        if e.kv_usage >= self.kv_high:
            return EndpointView(e.name, e.in_flight + 1, e.weight, e.waiting, e.kv_usage)
        return e

    def choose(self, endpoints: Sequence[EndpointView], request: RoutingRequest) -> EndpointView:
        loaded = [self._load(e) for e in endpoints]
        cap = load_cap(loaded, self.epsilon, self.load_slack)
        fits = [e for e in loaded if load_of(e) + 1 / e.weight <= cap] or loaded
        blocks = block_hashes(request.prompt or "", self.block_chars)
        key = request.session_key or request.first_user or request.request_id or ""
        sender = stable_hash(key)
        shared = self.index.shared_prefix(blocks, sender, self.min_senders)
        private = {e.name: max(self.index.match(e.name, blocks) - shared, 0) for e in fits}
        if request.hint in private:
            private[request.hint] = max(private[request.hint], len(blocks) - shared)
        home = bounded_walk(fits, key, self.epsilon, slack=self.load_slack).name
        best = max(fits, key=lambda e: (private[e.name], -load_of(e), e.name == home))
        chosen = best if private[best.name] > 0 else next(e for e in fits if e.name == home)
        self.index.insert(chosen.name, blocks, sender)
        matches = {e.name: shared + private[e.name] for e in fits}
        if request.request_id:
            self._remember(request.request_id, chosen.name, matches[chosen.name], len(blocks))
        return next(e for e in endpoints if e.name == chosen.name)

    def _remember(self, request_id: str, name: str, matched: int, total: int) -> None:
        self._predicted[request_id] = (name, matched, total)
        if len(self._predicted) > 10_000:
            self._predicted.popitem(last=False)

    def feedback(self, request_id: str, cached_tokens: int, prompt_tokens: int) -> float | None:
        """Compare the backend's reported cache hit with our prediction; when the backend
        keeps far less than we believe, forget its oldest entries. Returns the predicted
        share (for metrics), or None when the request is unknown."""
        record = self._predicted.pop(request_id, None)
        if record is None or prompt_tokens <= 0:
            return None
        name, matched, total = record
        predicted = matched / total if total else 0.0
        actual = cached_tokens / prompt_tokens
        if predicted > 0.5 and actual < predicted / 2:
            self.index.shrink(name, 0.1)
        return predicted

    def forget(self, name: str) -> None:
        self.index.forget(name)
