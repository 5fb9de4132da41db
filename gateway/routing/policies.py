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
from typing import Protocol

from gateway.routing.views import EndpointView, RoutingRequest


class Policy(StrEnum):
    ROUND_ROBIN = "round_robin"
    LEAST_OUTSTANDING = "least_outstanding"
    SESSION = "session"
    CACHE_AWARE = "cache_aware"
    SGLANG_LIKE = "sglang_like"


class RoutingPolicy(Protocol):
    uses_prompt: bool  # whether the caller must build RoutingRequest.prompt

    def choose(self, endpoints: Sequence[EndpointView], request: RoutingRequest) -> EndpointView:
        """Pick one of ``endpoints`` (never empty)."""
        ...


class RoundRobin:
    """Each endpoint in turn; a weight of w gives an endpoint w turns per cycle.

    The cursor counts requests, not positions, so an endpoint leaving the snapshot
    (unhealthy, tried) shifts the others by at most one turn.
    """

    uses_prompt = False

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


class LeastOutstanding:
    """Power of two choices over in-flight counts (per unit of weight).

    Sampling two and taking the less loaded avoids the herd that a global "least loaded"
    causes when several gateway replicas see the same stale counts.
    """

    uses_prompt = False

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def choose(self, endpoints: Sequence[EndpointView], request: RoutingRequest) -> EndpointView:
        if len(endpoints) == 1:
            return endpoints[0]
        a, b = self._rng.sample(list(endpoints), 2)
        load_a = max(a.in_flight, a.waiting) / a.weight
        load_b = max(b.in_flight, b.waiting) / b.weight
        if load_a == load_b:
            return a  # random already: sample() order is random
        return a if load_a < load_b else b


@dataclass(frozen=True)
class PolicyOptions:
    epsilon: float = 0.25  # session, cache_aware: load bound (1 + epsilon) x mean
    load_slack: int = 2  # cache_aware: requests allowed above that bound
    block_chars: int = 64  # cache_aware: prefix index granularity (~16 tokens)
    max_index_blocks: int = 200_000  # cache_aware, sglang_like: index size cap (entries)


def make_policy(policy: Policy, options: PolicyOptions | None = None) -> RoutingPolicy:
    from gateway.routing.cache_aware import CacheAware
    from gateway.routing.session import Session
    from gateway.routing.sglang_like import SglangLike

    o = options or PolicyOptions()
    if policy is Policy.ROUND_ROBIN:
        return RoundRobin()
    if policy is Policy.LEAST_OUTSTANDING:
        return LeastOutstanding()
    if policy is Policy.SESSION:
        return Session(epsilon=o.epsilon)
    if policy is Policy.CACHE_AWARE:
        return CacheAware(block_chars=o.block_chars, max_blocks=o.max_index_blocks,
                          epsilon=o.epsilon, load_slack=o.load_slack)
    if policy is Policy.SGLANG_LIKE:
        return SglangLike(max_blocks=o.max_index_blocks)
    raise ValueError(f"unknown routing policy {policy!r}")
