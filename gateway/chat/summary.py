"""Summaries of the turns a cut dropped (``stepped+summary``, stored conversations only).

The summary is pinned and replaced only at cut points, so it changes as rarely as the cut;
it is written by a model reached through the gateway's own pool.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.backends import BackendPool, dispatch
from gateway.chat.tokens import message_text
from gateway.conversations.models import Summary
from gateway.routing import RoutingRequest
from gateway.settings import PoolConfig

log = logging.getLogger("ragate.summary")

SUMMARY_INSTRUCTIONS = (
    "You maintain the memory of a long chat. Merge the previous summary (if any) and the "
    "dropped messages into one short summary in the conversation's language. Keep names, "
    "facts, decisions, preferences and open questions; drop small talk. Answer with the "
    "summary only. / 请用对话所用的语言写一段简短摘要，保留人名、事实、决定、偏好和未解决的问题。"
)
SUMMARY_PREFIX = "Summary of the earlier conversation:\n"

Complete = Callable[[list[dict[str, Any]], int], Awaitable[str]]


async def summarize(
    complete: Complete,
    previous: str | None,
    dropped: Sequence[dict[str, Any]],
    max_tokens: int,
) -> str | None:
    """A new summary text, or None when the model could not be reached (logged)."""
    transcript = "\n".join(f"{m.get('role')}: {message_text(m)}" for m in dropped)
    user = (f"Previous summary:\n{previous}\n\n" if previous else "") + (
        f"Dropped messages:\n{transcript}")
    try:
        text = await complete(
            [{"role": "system", "content": SUMMARY_INSTRUCTIONS},
             {"role": "user", "content": user}], max_tokens)
    except Exception as exc:  # the chat must go on without a summary
        log.warning("summary failed: %s", exc)
        return None
    text = text.strip()
    return text or None


async def summary_at(
    current: Summary | None,
    turns: Sequence[Sequence[dict[str, Any]]],
    start: int,
    max_tokens: int,
    complete: Complete,
) -> tuple[Summary | None, str]:
    """The summary in force for a cut at ``start``: reused as is, or extended at a new cut
    point. Returns it with the outcome (``reused``, ``ok``, ``failed``) for the metrics."""
    if start == 0 or (current is not None and current.covers_turns == start):
        return current, "reused"
    covered = current.covers_turns if current and current.covers_turns < start else 0
    previous = current.text if current is not None and covered else None
    dropped = [m for turn in turns[covered:start] for m in turn]
    text = await summarize(complete, previous, dropped, max_tokens)
    if text is None:
        return current, "failed"
    return Summary(text, start), "ok"


def summary_message(text: str) -> dict[str, Any]:
    return {"role": "system", "content": SUMMARY_PREFIX + text}


def completion_text(body: bytes) -> str:
    data = json.loads(body)
    return str(data["choices"][0]["message"].get("content") or "")


def pool_completer(pool: BackendPool, config: PoolConfig) -> Callable[[str], Complete]:
    """``model -> complete``: one non-streamed chat completion through the pool."""

    def for_model(model: str) -> Complete:
        async def complete(messages: list[dict[str, Any]], max_tokens: int) -> str:
            route = pool.route(model)
            payload = {"messages": messages, "max_tokens": max_tokens, "temperature": 0}
            reply = await dispatch(route, "/v1/chat/completions", lambda _t: payload,
                                   stream=False, request=RoutingRequest(model=model),
                                   config=config)
            return completion_text(reply.body)
        return complete

    return for_model
