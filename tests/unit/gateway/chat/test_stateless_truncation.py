"""Stateless truncation, with hypothesis: the cut a client that resends its whole history
gets, turn after turn, from ``truncation.fit`` over ``history.from_request``."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.chat.history import from_request
from gateway.chat.tokens import EstimateCounter, MessageCounter
from gateway.chat.truncation import Reserved, Strategy, Window, fit
from gateway.errors import ContextLengthExceededError

SYSTEM = {"role": "system", "content": "You are a careful assistant. " * 4}


def chat(sizes: list[tuple[int, int]]) -> list[dict[str, str]]:
    """A whole stateless history: one (question words, answer words) pair per turn."""
    messages = [SYSTEM]
    for n, (q, a) in enumerate(sizes):
        messages.append({"role": "user", "content": f"q{n} " + "word " * q})
        messages.append({"role": "assistant", "content": f"a{n} " + "text " * a})
    return messages


def request_at(messages: list[dict[str, str]], turn: int) -> list[dict[str, str]]:
    """What the client sends for turn ``turn``: everything before its answer."""
    return messages[:1 + 2 * turn + 1]


def sent(messages: list[dict[str, str]], window: Window, reserved: Reserved,
         counter: MessageCounter) -> tuple[list[dict[str, str]], int]:
    history = from_request(messages, None)
    cut = asyncio.run(fit(history.pinned, history.turns, history.new, counter,
                          Strategy.STEPPED, window, reserved))
    kept = [m for t in history.turns[cut.start:] for m in t]
    return [*history.pinned, *kept, *history.new], cut.start


turn_sizes = st.lists(st.tuples(st.integers(1, 60), st.integers(1, 80)), min_size=2,
                      max_size=40)


@settings(max_examples=60, deadline=None)
@given(sizes=turn_sizes, budget=st.integers(300, 1500), low=st.floats(0.3, 0.9),
       passages=st.sampled_from([0, 40, 120]))
def test_consecutive_turns_share_the_cut_until_the_high_water_mark(
        sizes: list[tuple[int, int]], budget: int, low: float, passages: int) -> None:
    counter = MessageCounter(EstimateCounter())
    window = Window(budget, low_water=low, high_water=1.0)
    reserved = Reserved(passages=passages)
    messages = chat(sizes)
    previous: tuple[list[dict[str, str]], int] | None = None
    for turn in range(len(sizes)):
        try:
            prompt, start = sent(request_at(messages, turn), window, reserved, counter)
        except ContextLengthExceededError:
            return  # one question alone is over the budget: nothing more to check
        counts = asyncio.run(counter.count(prompt))
        assert sum(counts) + reserved.total <= budget, "never over budget"
        assert prompt[0] == SYSTEM, "pinned is never dropped"
        assert prompt[-1] == request_at(messages, turn)[-1], "the question is always sent"
        if previous is not None:
            before, previous_start = previous
            assert start >= previous_start, "the cut only moves forward"
            if start == previous_start:
                assert prompt[:len(before)] == before, "same cut: byte-identical prefix"
            else:
                # a new cut only when keeping the old one would pass the high-water mark
                kept = sum(asyncio.run(counter.count(
                    request_at(messages, turn)[1 + 2 * previous_start:])))
                pinned = sum(asyncio.run(counter.count([SYSTEM]))) + reserved.total
                assert kept > window.high_water * (budget - pinned)
        previous = (prompt, start)


def test_the_pinned_part_alone_over_the_budget_is_a_400_saying_what_is_pinned() -> None:
    counter = MessageCounter(EstimateCounter())
    history = from_request(chat([(5, 5), (5, 5)]), None)
    with pytest.raises(ContextLengthExceededError) as err:
        asyncio.run(fit(history.pinned, history.turns, history.new, counter,
                        Strategy.STEPPED, Window(100), Reserved(summary=0, passages=90)))
    message = err.value.message
    assert "pinned" in message and "passages reserve 90" in message
    assert err.value.code == "context_length_exceeded" and err.value.status_code == 400
