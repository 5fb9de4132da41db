"""Policy name -> factory: the one place a config value becomes a routing policy."""

from __future__ import annotations

from collections.abc import Callable

from gateway.routing.cache_aware import CacheAware
from gateway.routing.policies import (
    LeastOutstanding,
    Policy,
    PolicyOptions,
    RoundRobin,
    RoutingPolicy,
)
from gateway.routing.session import Session
from gateway.routing.sglang_like import SglangLike

POLICIES: dict[Policy, Callable[[PolicyOptions], RoutingPolicy]] = {
    Policy.ROUND_ROBIN: lambda o: RoundRobin(),
    Policy.LEAST_OUTSTANDING: lambda o: LeastOutstanding(),
    Policy.SESSION: lambda o: Session(epsilon=o.epsilon),
    Policy.CACHE_AWARE: lambda o: CacheAware(block_chars=o.block_chars,
                                             max_blocks=o.max_index_blocks,
                                             epsilon=o.epsilon, load_slack=o.load_slack),
    Policy.SGLANG_LIKE: lambda o: SglangLike(max_blocks=o.max_index_blocks),
}


def make_policy(policy: Policy, options: PolicyOptions | None = None) -> RoutingPolicy:
    factory = POLICIES.get(Policy(policy))
    if factory is None:
        raise ValueError(f"unknown routing policy {policy!r}")
    return factory(options or PolicyOptions())
