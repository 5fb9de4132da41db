"""session, cache_aware and sglang_like: load bounds, index caps, stickiness, hotspots."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from gateway.backends.load import parse_load
from gateway.routing import (
    CacheAware,
    EndpointView,
    PrefixIndex,
    RoutingRequest,
    Session,
    SglangLike,
)
from gateway.routing.hashing import block_hashes
from gateway.routing.session import load_cap

NAMES = ["b0", "b1", "b2", "b3"]
SYSTEM = "You are Captain Mira, a retired sea captain. " * 60  # ~2.7k characters


def snapshot(loads: dict[str, int]) -> list[EndpointView]:
    return [EndpointView(n, in_flight=loads[n]) for n in sorted(loads)]


def chat(system: str, user: str, turns: int = 0) -> str:
    """Turn ``turns`` of a conversation: each prompt extends the previous one."""
    history = "".join(f"<|user|>\n{user} {i}\n<|assistant|>\nanswer {i}\n"
                      for i in range(turns))
    return f"<|system|>\n{system}\n{history}<|user|>\n{user} {turns}\n"


def test_session_bounded_load_holds_under_random_traffic() -> None:
    rng = random.Random(5)
    policy = Session(epsilon=0.25)
    loads = dict.fromkeys(NAMES, 0)
    running: list[str] = []
    for step in range(5000):
        if running and rng.random() < 0.45:  # a request finishes
            loads[running.pop(rng.randrange(len(running)))] -= 1
        view = snapshot(loads)
        cap = load_cap(view, 0.25)
        key = f"user-{rng.randrange(30)}"  # few hot keys: stickiness fights the bound
        chosen = policy.choose(view, RoutingRequest("m", session_key=key)).name
        loads[chosen] += 1
        running.append(chosen)
        assert loads[chosen] <= cap, f"step {step}: {loads} over cap {cap}"
        mean = sum(loads.values()) / len(loads)
        assert loads[chosen] <= math.ceil(1.25 * mean) + 1


def test_session_sticks_and_moves_only_the_removed_backends_keys() -> None:
    policy = Session()
    idle = snapshot(dict.fromkeys(NAMES, 0))
    before = {k: policy.choose(idle, RoutingRequest("m", session_key=k)).name
              for k in (f"conv-{i}" for i in range(400))}
    again = {k: policy.choose(idle, RoutingRequest("m", session_key=k)).name for k in before}
    assert before == again
    assert len(set(before.values())) == 4
    without_b2 = [e for e in idle if e.name != "b2"]
    after = {k: policy.choose(without_b2, RoutingRequest("m", session_key=k)).name
             for k in before}
    moved = [k for k in before if before[k] != after[k]]
    assert all(before[k] == "b2" for k in moved)
    assert "b2" not in after.values()


def test_session_follows_a_hint_from_another_replica_within_the_bound() -> None:
    policy = Session()
    idle = snapshot(dict.fromkeys(NAMES, 0))
    natural = policy.choose(idle, RoutingRequest("m", session_key="c1")).name
    other = next(n for n in NAMES if n != natural)
    hinted = RoutingRequest("m", session_key="c1", hint=other)
    assert policy.choose(idle, hinted).name == other
    busy = snapshot({**dict.fromkeys(NAMES, 0), other: 50})
    assert policy.choose(busy, hinted).name != other, "an overloaded hint is not followed"


def test_prefix_index_cap_holds_under_a_long_random_workload() -> None:
    rng = random.Random(1)
    index = PrefixIndex(max_blocks=500)
    for _ in range(3000):
        text = "".join(rng.choice("abcdefgh") for _ in range(rng.randrange(64, 2048)))
        index.insert(rng.choice(NAMES), block_hashes(text, 64))
        assert len(index) <= 500
    assert sum(index.size(n) for n in NAMES) == len(index)


def test_cache_aware_index_cap_holds_through_choose() -> None:
    rng = random.Random(2)
    policy = CacheAware(max_blocks=300)
    view = snapshot(dict.fromkeys(NAMES, 0))
    for i in range(2000):
        text = chat(f"system {rng.randrange(50)} " * 30, f"user {i}", rng.randrange(5))
        policy.choose(view, RoutingRequest("m", session_key=f"s{i}", prompt=text))
        assert len(policy.index) <= 300


def test_cache_aware_keeps_a_conversation_on_its_backend() -> None:
    policy = CacheAware()
    view = snapshot(dict.fromkeys(NAMES, 0))
    homes = set()
    for conv in range(20):
        chosen = [policy.choose(view, RoutingRequest(
            "m", session_key=f"conv-{conv}", prompt=chat(SYSTEM, f"topic {conv}", turns))).name
            for turns in range(6)]
        assert len(set(chosen)) == 1, f"conversation {conv} moved: {chosen}"
        homes.add(chosen[0])
    assert len(homes) == 4, "first turns (misses) spread over the fleet"


def test_cache_aware_never_exceeds_its_bound_under_one_shared_system_prompt() -> None:
    """The hotspot that sent all of vLLM production-stack's traffic to one replica."""
    policy = CacheAware(epsilon=0.25, load_slack=2)
    loads = dict.fromkeys(NAMES, 0)
    for user in range(400):  # nothing finishes: load only grows
        view = snapshot(loads)
        cap = load_cap(view, 0.25, slack=2)
        chosen = policy.choose(view, RoutingRequest(
            "m", session_key=f"user-{user}", prompt=chat(SYSTEM, f"hello from {user}"))).name
        loads[chosen] += 1
        assert loads[chosen] <= cap
    assert max(loads.values()) <= 1.25 * sum(loads.values()) / 4 + 3


def test_cache_aware_prefers_the_hinted_backend_when_it_knows_nothing() -> None:
    policy = CacheAware()
    view = snapshot(dict.fromkeys(NAMES, 0))
    request = RoutingRequest("m", session_key="conv-x", prompt=chat(SYSTEM, "x", 4), hint="b3")
    assert policy.choose(view, request).name == "b3"


def test_cache_aware_feedback_shrinks_an_overestimated_backend() -> None:
    policy = CacheAware()
    view = snapshot(dict.fromkeys(NAMES, 0))
    prompt = chat(SYSTEM, "q", 3)
    first = policy.choose(view, RoutingRequest("m", session_key="c", prompt=prompt,
                                               request_id="r1")).name
    policy.choose(view, RoutingRequest("m", session_key="c", prompt=prompt, request_id="r2"))
    size = policy.index.size(first)
    assert policy.feedback("r2", cached_tokens=0, prompt_tokens=700) == pytest.approx(1.0)
    assert policy.index.size(first) < size
    assert policy.feedback("unknown", 0, 10) is None


@pytest.mark.parametrize("policy", [Session(), CacheAware(), SglangLike()])
def test_an_endpoint_outside_the_snapshot_is_never_chosen(policy) -> None:
    full = snapshot(dict.fromkeys(NAMES, 0))
    for i in range(50):  # teach the policy that b1 holds everything
        policy.choose([full[1]], RoutingRequest("m", session_key="k", prompt=SYSTEM + str(i),
                                                first_message=SYSTEM, hint="b1"))
    healthy = [e for e in full if e.name != "b1"]  # b1 unhealthy or removed
    for i in range(50):
        chosen = policy.choose(healthy, RoutingRequest(
            "m", session_key="k", prompt=SYSTEM + str(i), first_message=SYSTEM, hint="b1"))
        assert chosen.name != "b1"


def test_sglang_like_piles_a_shared_first_message_onto_one_backend() -> None:
    """Its published behaviour, kept on purpose: the first-message key matches everywhere
    once one worker holds it, until the imbalance thresholds (64 / 1.5x) trip."""
    policy = SglangLike()
    loads = dict.fromkeys(NAMES, 0)
    for user in range(60):
        chosen = policy.choose(snapshot(loads), RoutingRequest(
            "m", first_message=SYSTEM, prompt=chat(SYSTEM, f"u{user}"))).name
        loads[chosen] += 1
    assert max(loads.values()) == 60


def test_sglang_like_balances_when_imbalance_trips() -> None:
    policy = SglangLike()
    loads = {"b0": 100, "b1": 10, "b2": 10, "b3": 10}
    chosen = policy.choose(snapshot(loads), RoutingRequest("m", first_message="x" * 100))
    assert chosen.name in {"b1", "b2", "b3"}


def test_sglang_like_sends_misses_to_the_smallest_tree() -> None:
    policy = SglangLike()
    view = snapshot(dict.fromkeys(NAMES, 0))
    first = policy.choose(view, RoutingRequest("m", first_message="a" * 400)).name
    seconds = Counter(policy.choose(view, RoutingRequest("m", first_message=f"{i}" * 400)).name
                      for i in range(1, 4))
    assert first not in seconds and len(seconds) == 3


VLLM_METRICS = """# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="qwen"} 7.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="qwen"} 0.42
vllm:num_requests_running{engine="0",model_name="qwen"} 3.0
vllm:e2e_request_latency_seconds_bucket{le="0.3",model_name="qwen"} 2.0
"""
SGLANG_METRICS = """# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{model_name="m",tp_rank="0"} 2.0
sglang:token_usage{model_name="m",tp_rank="0"} 0.91
"""


def test_load_signals_are_read_from_vllm_and_sglang_metrics() -> None:
    vllm = parse_load(VLLM_METRICS)
    assert vllm.waiting == 7 and vllm.kv_usage == pytest.approx(0.42)
    sglang = parse_load(SGLANG_METRICS)
    assert sglang.waiting == 2 and sglang.kv_usage == pytest.approx(0.91)
    assert parse_load("nothing_here 1\n").waiting is None
