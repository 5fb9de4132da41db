"""The limits a client set, kept whatever the engine did.

A length limit (``max_completion_tokens`` or ``max_tokens``, the smaller when both) ends
the reply there with ``finish_reason: "length"``; ``parallel_tool_calls: false`` keeps
one tool call. Engines are sent the limit as well (``backends.kinds`` translates it), so
this is the backstop for an engine that ignored it: a length limit that silently does
nothing costs unbounded time and money.

Streamed, each chunk that carries generated text counts as one token. Engines stream a
token per chunk, or fewer chunks than tokens (an incomplete UTF-8 character, a held-back
prefix of a stop sequence), never more: the count cannot run ahead of the engine's, so a
reply the engine kept within the limit is never cut. Chunks are not parsed for this until
a stream has sent more events than the limit allows tokens (a stream within its limit
costs a counter increment per event).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.chat.usage import Usage

Chunk = dict[str, Any]
CountText = Callable[[str], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    max_tokens: int | None = None
    single_tool_call: bool = False

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> ReplyLimits:
        given = [v for v in (data.get("max_completion_tokens"), data.get("max_tokens"))
                 if isinstance(v, int) and not isinstance(v, bool)]
        return cls(min(given) if given else None, data.get("parallel_tool_calls") is False)


def with_length_limit(payload: dict[str, Any], limit: int) -> None:
    """The engine's body asks for at most ``limit`` tokens, under the name the client
    used (``max_tokens`` when it used none; the kind translates as it must)."""
    if "max_completion_tokens" in payload:
        payload["max_completion_tokens"] = limit
    if "max_tokens" in payload or "max_completion_tokens" not in payload:
        payload["max_tokens"] = limit


def _choice_text(choice: Mapping[str, Any]) -> tuple[str, str | None]:
    """(the choice's text, the key it is under in its message) for chat and legacy."""
    message = choice.get("message")
    if isinstance(message, dict):
        return str(message.get("content") or ""), "content"
    return str(choice.get("text") or ""), "text" if "text" in choice else None


async def _prefix_within(text: str, limit: int, count_text: CountText) -> str:
    """The longest prefix of ``text`` of at most ``limit`` tokens (binary search over
    characters: a dozen counts for a few thousand characters; this runs only when an
    engine ignored the limit)."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if await count_text(text[:middle]) <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low]


async def limit_reply(body: dict[str, Any], usage: Usage, limits: ReplyLimits,
                      count_text: CountText) -> Usage:
    """A whole reply within the client's limits, in place; the usage of what is left."""
    choices = [c for c in body.get("choices") or [] if isinstance(c, dict)]
    if limits.single_tool_call:
        for choice in choices:
            message = choice.get("message")
            if isinstance(message, dict) and len(message.get("tool_calls") or []) > 1:
                message["tool_calls"] = message["tool_calls"][:1]
    limit = limits.max_tokens
    if limit is None or usage.completion_tokens <= limit:  # no choice can be over it
        return usage
    cut, completion = False, 0
    for choice in choices:
        text, key = _choice_text(choice)
        tokens = await count_text(text)
        if tokens > limit and key is not None:
            text = await _prefix_within(text, limit, count_text)
            tokens = await count_text(text)
            target = choice["message"] if key == "content" else choice
            target[key] = text
            choice["finish_reason"] = "length"
            cut = True
        completion += tokens + await count_text(_calls_text(choice))
    if not cut:
        return usage  # nothing was cut: the engine's count stands
    # what the client got, counted one way (ours), never more than the engine said
    return replace(usage, completion_tokens=min(completion, usage.completion_tokens),
                   source="counted")


def _calls_text(choice: Mapping[str, Any]) -> str:
    message = choice.get("message")
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    return json.dumps(calls, ensure_ascii=False) if calls else ""


def _generates(choice: Mapping[str, Any]) -> bool:
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content") or delta.get("tool_calls")
                    or delta.get("reasoning_content"))
    return bool(choice.get("text"))


@dataclass
class LengthGuard:
    """One stream's token count per choice, against the limit."""

    limit: int
    events: int = 0
    counts: dict[int, int] | None = None  # None until the events outnumber the limit
    cut: set[int] = field(default_factory=set)

    def exceeded_events(self) -> bool:
        """Count one event; True once there were more events than the limit allows tokens
        (only then can a choice be over it, and chunks must be looked at)."""
        self.events += 1
        return self.events > self.limit

    def start_counting(self, earlier: Iterable[bytes]) -> None:
        """Exact counts from the chunks already relayed (parsed once, at the switch)."""
        self.counts = {}
        for data in earlier:
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            if isinstance(chunk, dict):
                for choice in chunk.get("choices") or []:
                    if isinstance(choice, dict) and _generates(choice):
                        index = choice.get("index", 0)
                        self.counts[index] = self.counts.get(index, 0) + 1

    def admit(self, chunk: Chunk) -> list[int]:
        """Remove from ``chunk`` the choices that went over the limit (or were cut before);
        the indices cut by this chunk, each to be finished with "length"."""
        assert self.counts is not None
        newly: list[int] = []
        kept = []
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0) if isinstance(choice, dict) else 0
            if index in self.cut:
                continue
            if isinstance(choice, dict) and _generates(choice):
                self.counts[index] = self.counts.get(index, 0) + 1
                if self.counts[index] > self.limit:
                    self.cut.add(index)
                    newly.append(index)
                    continue
            kept.append(choice)
        if "choices" in chunk:
            chunk["choices"] = kept
        return newly


def single_tool_call(chunk: Chunk) -> bool:
    """Drop every tool call but the first from a streamed chunk; True if it changed."""
    changed = False
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            continue
        calls = delta.get("tool_calls")
        if calls:
            first = [c for c in calls if isinstance(c, dict) and c.get("index", 0) == 0]
            if len(first) != len(calls):
                if first:
                    delta["tool_calls"] = first
                else:
                    del delta["tool_calls"]
                changed = True
    return changed
