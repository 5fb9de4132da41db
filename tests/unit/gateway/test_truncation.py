"""Truncation properties over random conversations (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.chat.truncation import Cut, Strategy, TurnCost, Window, plan

turn_cost = st.builds(
    lambda asked, reply: TurnCost(asked + reply, asked),
    st.integers(min_value=1, max_value=300), st.integers(min_value=0, max_value=400),
)
conversations = st.lists(turn_cost, min_size=0, max_size=120)
windows = st.builds(
    lambda budget, low, spread: Window(budget, low, min(1.0, low + spread)),
    st.integers(min_value=600, max_value=8000),
    st.floats(min_value=0.2, max_value=0.9), st.floats(min_value=0.0, max_value=0.5),
)
CUTTING = [Strategy.SLIDING, Strategy.STEPPED, Strategy.STEPPED_SUMMARY]


def prompt_size(turns: list[TurnCost], cut: Cut, question: int, pinned: int) -> int:
    return pinned + sum(t.total for t in turns[cut.start:]) + question


def live_starts(strategy: Strategy, turns: list[TurnCost], pinned: int,
                window: Window) -> list[int]:
    """The cut each request of the conversation saw when it was made, turn by turn."""
    return [plan(strategy, turns[:n], turns[n].asked, pinned, window).start
            for n in range(len(turns))]


@settings(max_examples=300, deadline=None)
@given(conversations, st.integers(1, 300), st.integers(0, 200), windows,
       st.sampled_from(CUTTING))
def test_result_fits_the_budget_when_the_question_fits(turns, question, pinned, window,
                                                       strategy) -> None:
    cut = plan(strategy, turns, question, pinned, window)
    assert 0 <= cut.start <= len(turns)
    if pinned + question <= window.budget * window.low_water:
        assert cut.fits
    if cut.fits:
        assert prompt_size(turns, cut, question, pinned) <= window.budget


@settings(max_examples=200, deadline=None)
@given(conversations, st.integers(1, 300), st.integers(0, 200), windows,
       st.sampled_from(list(Strategy)))
def test_cut_is_deterministic(turns, question, pinned, window, strategy) -> None:
    first = plan(strategy, list(turns), question, pinned, window)
    again = plan(strategy, tuple(turns), question, pinned, window)  # another replica
    assert first == again


@settings(max_examples=300, deadline=None)
@given(conversations, st.integers(0, 200), windows)
def test_stepped_prefix_is_stable_between_cut_points(turns, pinned, window) -> None:
    starts = live_starts(Strategy.STEPPED, turns, pinned, window)
    assert starts == sorted(starts), "the window start never moves back"
    room = window.budget - pinned
    for n in range(1, len(starts)):
        if starts[n] == starts[n - 1]:
            continue  # same start: turn n's prompt begins with turn n-1's whole prompt
        # a cut point: it happened only because the prompt would have passed high water
        before = sum(t.total for t in turns[starts[n - 1]:n]) + turns[n].asked
        assert before > window.high_water * room
        # and after it the kept history fits the low-water mark (or nothing is kept)
        after = sum(t.total for t in turns[starts[n]:n]) + turns[n].asked
        assert after <= window.low_water * room or starts[n] == n


@settings(max_examples=200, deadline=None)
@given(conversations, st.integers(0, 200), windows)
def test_replayed_cut_matches_the_cut_made_live(turns, pinned, window) -> None:
    """A replica that sees the conversation only now computes the same cut as the one that
    served each turn: the cut is a function of the stored turns alone."""
    starts = live_starts(Strategy.STEPPED, turns, pinned, window)
    for n in range(len(turns)):
        replayed = plan(Strategy.STEPPED, turns[:n], turns[n].asked, pinned, window)
        assert replayed.start == starts[n]


def test_stepped_cuts_rarely_and_sliding_every_turn() -> None:
    turns = [TurnCost(60, 20)] * 200
    window = Window(1000, low_water=0.5, high_water=1.0)
    stepped = live_starts(Strategy.STEPPED, turns, 100, window)
    sliding = live_starts(Strategy.SLIDING, turns, 100, window)
    stepped_moves = sum(1 for a, b in zip(stepped, stepped[1:], strict=False) if a != b)
    sliding_moves = sum(1 for a, b in zip(sliding, sliding[1:], strict=False) if a != b)
    assert sliding_moves >= 180, "a full sliding window moves every turn"
    assert stepped_moves <= 30, "stepped moves once per (high - low) of growth"


def test_none_keeps_everything_and_reports_overflow() -> None:
    turns = [TurnCost(500, 100)] * 4
    assert plan(Strategy.NONE, turns, 10, 0, Window(1000)) == Cut(0, False)
    assert plan(Strategy.NONE, turns[:1], 10, 0, Window(1000)) == Cut(0, True)


def test_question_larger_than_budget_does_not_fit() -> None:
    cut = plan(Strategy.STEPPED, [TurnCost(10, 5)], 2000, 0, Window(1000))
    assert cut == Cut(1, False)


@pytest.mark.parametrize("low, high", [(0, 1), (0.8, 0.5), (0.5, 1.5)])
def test_window_rejects_bad_water_marks(low: float, high: float) -> None:
    with pytest.raises(ValueError):
        Window(1000, low, high)
