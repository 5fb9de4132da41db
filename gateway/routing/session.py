"""``session``: consistent hashing with bounded load on the conversation (or user) key.

Each backend owns ``vnodes`` points on a hash ring; a key goes to the first backend
clockwise from its hash whose load stays within ``ceil((1 + epsilon) * (total + 1) / n)``
after taking the request (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with
Bounded Loads"). So a conversation sticks to one backend while that backend is not
overloaded, no backend ever takes more than (1 + ε) of the mean, and a backend leaving
the ring moves only its own keys. The ring uses stable hashes, so every gateway replica
computes the same ring.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from functools import lru_cache

from gateway.routing.hashing import stable_hash
from gateway.routing.policies import RoutingPolicy
from gateway.routing.views import EndpointView, RoutingRequest


@lru_cache(maxsize=64)
def _ring(names: tuple[str, ...], vnodes: int) -> tuple[list[int], list[str]]:
    points = sorted((stable_hash(f"{name}#{i}"), name) for name in names for i in range(vnodes))
    return [p for p, _ in points], [n for _, n in points]


def load_of(endpoint: EndpointView) -> float:
    return endpoint.load


def load_cap(endpoints: Sequence[EndpointView], epsilon: float, slack: int = 0) -> float:
    """The most load one endpoint may have after taking one more request:
    ``ceil((1 + epsilon) * (total + 1) / n) + slack``."""
    total = sum(load_of(e) for e in endpoints) + 1
    return max(1.0, math.ceil((1 + epsilon) * total / len(endpoints))) + slack


def bounded_walk(
    endpoints: Sequence[EndpointView], key: str, epsilon: float, vnodes: int = 128,
    slack: int = 0,
) -> EndpointView:
    """The first endpoint clockwise from ``key`` whose load stays under the cap."""
    by_name = {e.name: e for e in endpoints}
    hashes, owners = _ring(tuple(sorted(by_name)), vnodes)
    cap = load_cap(endpoints, epsilon, slack)
    start = bisect.bisect(hashes, stable_hash(key))
    seen: set[str] = set()
    for i in range(len(owners)):
        name = owners[(start + i) % len(owners)]
        if name in seen:
            continue
        seen.add(name)
        endpoint = by_name[name]
        if load_of(endpoint) + 1 / endpoint.weight <= cap:
            return endpoint
        if len(seen) == len(by_name):
            break
    return min(endpoints, key=load_of)  # unreachable in practice: the least loaded fits


class Session(RoutingPolicy):
    sticky = True

    def __init__(self, epsilon: float = 0.25, vnodes: int = 128) -> None:
        if epsilon <= 0:
            raise ValueError("epsilon must be positive")
        self.epsilon = epsilon
        self.vnodes = vnodes

    def choose(self, endpoints: Sequence[EndpointView], request: RoutingRequest) -> EndpointView:
        key = request.session_key
        if key is None:  # no conversation: spread by load alone
            return min(endpoints, key=lambda e: (load_of(e), e.name))
        if request.hint is not None:  # where another replica already put this session
            hinted = next((e for e in endpoints if e.name == request.hint), None)
            if hinted is not None and load_of(hinted) + 1 / hinted.weight <= load_cap(
                    endpoints, self.epsilon):
                return hinted
        return bounded_walk(endpoints, key, self.epsilon, self.vnodes)
