"""Predicted prefix reuse: stored fingerprints, and the stateless prompt memory."""

from __future__ import annotations

import pytest

from gateway.chat.reuse import RecentPrompts, prefix_reuse


def test_prefix_reuse_counts_tokens_up_to_the_first_difference() -> None:
    assert prefix_reuse([("a", 5), ("b", 3), ("c", 2)], [("a", 5), ("b", 3), ("x", 9)]) == 8
    assert prefix_reuse([], [("a", 5)]) == 0
    assert prefix_reuse([("x", 5)], [("a", 5)]) == 0


def test_recent_prompts_find_the_longest_remembered_prefix_per_model() -> None:
    recent = RecentPrompts()
    first = [("s", 10), ("u1", 4)]
    assert recent.reuse_and_remember("m", first) == 0
    assert recent.reuse_and_remember("m", [*first, ("a1", 3), ("u2", 5)]) == 14
    assert recent.reuse_and_remember("m", [("s", 10), ("other", 4)]) == 10
    assert recent.reuse_and_remember("n", first) == 0, "another model shares nothing"
    # a message equal to one seen elsewhere counts only at the same position after the same
    assert recent.reuse_and_remember("m", [("u1", 4)]) == 0


def test_recent_prompts_stay_within_capacity() -> None:
    recent = RecentPrompts(capacity=5)
    for i in range(20):
        recent.reuse_and_remember("m", [(f"p{i}", 1), (f"q{i}", 1)])
    assert len(recent._chains) == 5
    with pytest.raises(ValueError):
        RecentPrompts(capacity=0)


def test_a_remembered_reply_extends_the_reusable_prefix() -> None:
    recent = RecentPrompts()
    prompt = [("s", 10), ("u1", 4)]
    recent.reuse_and_remember("m", prompt)
    recent.remember("m", [*prompt, ("a1", 6)])  # the reply, once it finished
    assert recent.reuse_and_remember("m", [*prompt, ("a1", 6), ("u2", 5)]) == 20
