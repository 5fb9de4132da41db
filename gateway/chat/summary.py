"""Summaries of dropped turns, written by a model reached through the gateway's own pool."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gateway.tokens import message_text

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


def summary_message(text: str) -> dict[str, Any]:
    return {"role": "system", "content": SUMMARY_PREFIX + text}


def completion_text(body: bytes) -> str:
    data = json.loads(body)
    return str(data["choices"][0]["message"].get("content") or "")
