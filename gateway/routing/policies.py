"""Routing policies: ``choose(endpoints, request) -> EndpointView``, no I/O, no awaits.

The pool takes a snapshot of the endpoints that may receive a request (healthy, breaker
closed or half-open, not draining, not already tried for this request) and hands it to the
model's policy. Policies never see HTTP objects, so they are tested with plain values.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

from gateway.routing.views import EndpointView, RoutingRequest


class Policy(StrEnum):
    ROUND_ROBIN = "round_robin"
    LEAST_OUTSTANDING = "least_outstanding"
    SESSION = "session"
    CACHE_AWARE = "cache_aware"
    SGLANG_LIKE = "sglang_like"


class RoutingPolicy:
    """What every policy offers; the two hooks are no-ops unless a policy keeps state about
    backends (a prefix index), so callers never probe for them."""

    uses_prompt: ClassVar[bool] = False  # whether the caller must build RoutingRequest.prompt
    sticky: ClassVar[bool] = False  # keeps a session on its backend: wants the shared hint

    def choose(self, endpoints: Sequence[EndpointView], request: RoutingRequest) -> EndpointView:
        """Pick one of ``endpoints`` (never empty)."""
        raise NotImplementedError

    def feedback(self, request_id: str, cached_tokens: int, prompt_tokens: int
                 ) -> float | None:
        """The backend's reported cache hit for a request this policy routed; returns the
        share the policy predicted (for metrics), or None when it predicts nothing."""
        return None

    def forget(self, name: str) -> None:
        """A backend left the pool: drop what the policy knows of it."""


class RoundRobin(RoutingPolicy):
    """Each endpoint in turn; a weight of w gives an endpoint w turns per cycle.

    The cursor counts requests, not positions, so an endpoint leaving the snapshot
    (unhealthy, tried) shifts the others by at most one turn.
    """

    def __init__(self) -> None:
        self._counter = 0

    def choose(self, endpoints: Sequence[EndpointView], request: RoutingRequest) -> EndpointView:
        total = sum(e.weight for e in endpoints)
        slot = self._counter % total
        self._counter += 1
        for endpoint in endpoints:
            if slot < endpoint.weight:
                return endpoint
            slot -= endpoint.weight
        raise AssertionError("unreachable: slot < total weight")


class LeastOutstanding(RoutingPolicy):
    """Power of two choices over load (``EndpointView.load``).

    Sampling two and taking the less loaded avoids the herd that a global "least loaded"
    causes when several gateway replicas see the same stale counts.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, endpoints: Sequence[EndpointView], request: RoutingRequest) -> EndpointView:
        if len(endpoints) == 1:
            return endpoints[0]
        a, b = self._rng.sample(list(endpoints), 2)
        if a.load == b.load:
            return a  # random already: sample() order is random
        return a if a.load < b.load else b


@dataclass(frozen=True)
class PolicyOptions:
    epsilon: float = 0.25  # session, cache_aware: load bound (1 + epsilon) x mean
    load_slack: int = 2  # cache_aware: requests allowed above that bound
    block_chars: int = 64  # cache_aware: prefix index granularity (~16 tokens)
    max_index_blocks: int = 200_000  # cache_aware, sglang_like: index size cap (entries)
