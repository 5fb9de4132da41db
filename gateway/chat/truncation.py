"""Step 5: prompt-cache-aware truncation: which history turns to keep, as a pure function.

Backends reuse their KV cache only for an identical prompt *prefix*. A sliding window moves
the start of the history every turn once it is full, so nothing is reused. ``stepped``
instead cuts whole turns from the oldest end only when the prompt would pass the
high-water mark, and then down to the low-water mark, so the following turns share a
byte-identical prefix until the next cut.

The cut is computed by replaying the conversation from its first turn: at each step the
question of that turn is asked over the history kept so far, and the kept window advances
only where the rule says so. The result depends on nothing but the turn sizes and the
settings, so every gateway replica cuts at the same turns without sharing any state, and
a stateless client that resends the whole history every turn gets the same cut each time
until the high-water mark is crossed again: the backend sees a byte-identical prefix.

``fit`` applies ``plan`` to a request's history: it counts the messages as the client sent
them (never the passages, whose share of the budget is the fixed reserve counted as
pinned), so the cut depends on the messages alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from gateway.errors import ContextLengthExceededError

if TYPE_CHECKING:  # settings imports Strategy from here
    from gateway.chat.tokens import MessageCounter
    from gateway.settings import ModelConfig


class Strategy(StrEnum):
    NONE = "none"
    SLIDING = "sliding"
    STEPPED = "stepped"
    STEPPED_SUMMARY = "stepped+summary"

    @property
    def summarizes(self) -> bool:
        return self is Strategy.STEPPED_SUMMARY


@dataclass(frozen=True, slots=True)
class TurnCost:
    """Tokens of one stored turn: all of it, and the part asked (all but the final reply)."""

    total: int
    asked: int


@dataclass(frozen=True, slots=True)
class Window:
    budget: int  # tokens the whole prompt may use (context − completion reserve − margin)
    low_water: float = 0.5  # stepped: after a cut, history + question fill at most this share
    high_water: float = 1.0  # stepped: cut when history + question would pass this share

    def __post_init__(self) -> None:
        if self.budget <= 0:
            raise ValueError("budget must be positive")
        if not 0 < self.low_water <= self.high_water <= 1:
            raise ValueError("need 0 < low_water <= high_water <= 1")


@dataclass(frozen=True, slots=True)
class Cut:
    start: int  # index of the first kept turn; turns [0, start) are dropped
    fits: bool  # False when even the pinned messages and the question exceed the budget


def plan(
    strategy: Strategy,
    turns: Sequence[TurnCost],
    question: int,
    pinned: int,
    window: Window,
) -> Cut:
    """Where to cut the history for a request asking ``question`` tokens after ``turns``.

    ``pinned`` is everything that never drops (system prompt, persona card, and for
    ``stepped+summary`` the summary's reserved size, so the cut does not depend on the
    summary's actual text).
    """
    room = window.budget - pinned
    if strategy is Strategy.NONE:
        return Cut(0, sum(t.total for t in turns) + question <= room)
    prefix = [0, *accumulate(t.total for t in turns)]
    n = len(turns)
    if strategy is Strategy.SLIDING:
        start = _first_fitting(prefix, n, question, room, start=0)
        return Cut(start, prefix[n] - prefix[start] + question <= room)
    high, low = window.high_water * room, window.low_water * room
    start = 0
    for step in range(n + 1):  # replay: step t asks turn t's question over turns [start, t)
        asked = turns[step].asked if step < n else question
        if prefix[step] - prefix[start] + asked > high:
            start = _first_fitting(prefix, step, asked, low, start)
    return Cut(start, prefix[n] - prefix[start] + question <= room)


def _first_fitting(prefix: list[int], end: int, asked: int, limit: float, start: int) -> int:
    """Smallest s >= start with turns [s, end) + asked <= limit (end when none fits)."""
    while start < end and prefix[end] - prefix[start] + asked > limit:
        start += 1
    return start


@dataclass(frozen=True, slots=True)
class Reserved:
    """Pinned tokens that are not messages yet: set aside so the cut does not depend on
    what a summary or a search returns."""

    summary: int = 0
    passages: int = 0

    @property
    def total(self) -> int:
        return self.summary + self.passages


def strategy_for(model: ModelConfig, *, stored: bool) -> Strategy | None:
    """How this request is cut; None when nothing is counted or cut (the window is unknown,
    or a stateless request on a model set to pass them through)."""
    if not model.context_window:
        return None
    if stored:
        return model.truncation.strategy
    mode = model.stateless
    if mode == "none":
        return None
    if mode == "reject":
        return Strategy.NONE
    return Strategy.SLIDING if mode == "sliding" else Strategy.STEPPED


def window_of(model: ModelConfig) -> Window:
    assert model.context_window
    t = model.truncation
    budget = model.context_window - t.reserve_completion_tokens - t.margin_tokens
    return Window(max(budget, 1), t.low_water, t.high_water)


async def fit(
    pinned: Sequence[dict[str, Any]],
    turns: Sequence[Sequence[dict[str, Any]]],
    new: Sequence[dict[str, Any]],
    counter: MessageCounter,
    strategy: Strategy,
    window: Window,
    reserved: Reserved,
) -> Cut:
    """The cut for this history; ContextLengthExceededError (400) when even the pinned
    part and the new messages exceed the budget, saying what is pinned."""
    flat = [*pinned, *(m for turn in turns for m in turn), *new]
    counts = await counter.count(flat)
    costs, pos = [], len(pinned)
    for turn in turns:
        sizes = counts[pos:pos + len(turn)]
        answered = len(turn) > 1 and turn[-1].get("role") == "assistant"
        costs.append(TurnCost(sum(sizes), sum(sizes[:-1]) if answered else sum(sizes)))
        pos += len(turn)
    question = sum(counts[pos:])
    pinned_messages = sum(counts[:len(pinned)])
    cut = plan(strategy, costs, question, pinned_messages + reserved.total, window)
    if not cut.fits:
        kept = sum(c.total for c in costs[cut.start:])
        raise ContextLengthExceededError(
            f"the prompt needs {pinned_messages + reserved.total + kept + question} tokens "
            f"but the budget is {window.budget} (strategy {strategy}): pinned "
            f"{pinned_messages + reserved.total} (system prompt and persona "
            f"{pinned_messages}, summary reserve {reserved.summary}, passages reserve "
            f"{reserved.passages}), history {kept}, new messages {question}")
    return cut
