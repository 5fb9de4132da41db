"""Routing policies are pure functions over snapshots."""

import random
from collections import Counter

import pytest

from gateway.routing import (
    EndpointView,
    LeastOutstanding,
    Policy,
    RoundRobin,
    RoutingRequest,
    make_policy,
)

REQ = RoutingRequest(model="m")


def test_round_robin_cycles_in_order() -> None:
    eps = [EndpointView("a"), EndpointView("b"), EndpointView("c")]
    rr = RoundRobin()
    assert [rr.choose(eps, REQ).name for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_round_robin_honours_weights() -> None:
    eps = [EndpointView("a", weight=3), EndpointView("b", weight=1)]
    rr = RoundRobin()
    counts = Counter(rr.choose(eps, REQ).name for _ in range(400))
    assert counts == {"a": 300, "b": 100}


def test_round_robin_with_shrinking_snapshot_stays_valid() -> None:
    rr = RoundRobin()
    full = [EndpointView("a"), EndpointView("b")]
    rr.choose(full, REQ)
    assert rr.choose([EndpointView("b")], REQ).name == "b"


def test_least_outstanding_prefers_less_loaded_of_two() -> None:
    eps = [EndpointView("busy", in_flight=10), EndpointView("idle", in_flight=0)]
    lo = LeastOutstanding(random.Random(1))
    assert {lo.choose(eps, REQ).name for _ in range(50)} == {"idle"}


def test_least_outstanding_spreads_equal_load() -> None:
    eps = [EndpointView(n) for n in "abcd"]
    lo = LeastOutstanding(random.Random(7))
    counts = Counter(lo.choose(eps, REQ).name for _ in range(4000))
    assert set(counts) == set("abcd")
    assert max(counts.values()) < 1.3 * min(counts.values())


def test_least_outstanding_never_picks_the_most_loaded_of_three() -> None:
    eps = [EndpointView("a", 1), EndpointView("b", 2), EndpointView("c", 9)]
    lo = LeastOutstanding(random.Random(3))
    assert "c" not in {lo.choose(eps, REQ).name for _ in range(200)}


def test_least_outstanding_uses_load_per_weight() -> None:
    eps = [EndpointView("big", in_flight=4, weight=4), EndpointView("small", in_flight=2)]
    lo = LeastOutstanding(random.Random(0))
    assert {lo.choose(eps, REQ).name for _ in range(20)} == {"big"}


def test_single_endpoint_is_chosen() -> None:
    only = [EndpointView("x", in_flight=100)]
    for policy in Policy:
        assert make_policy(policy).choose(only, REQ).name == "x"


def test_policy_names_match_config_values() -> None:
    assert Policy("round_robin") is Policy.ROUND_ROBIN
    assert Policy("least_outstanding") is Policy.LEAST_OUTSTANDING
    with pytest.raises(ValueError):
        Policy("random")
