"""Replies in OpenAI's current shape, whatever the engine sent.

What clients (the OpenAI SDKs, LangChain, LlamaIndex) rely on and engines differ in:
``finish_reason`` is one of OpenAI's values; every tool call has an ``id`` and a
``type``, and a reply that calls tools ends with ``tool_calls``; a reply has ``id``,
``object`` and ``created``; ``usage`` has ``total_tokens`` and, where the engine said how
much of the prompt it had cached, ``prompt_tokens_details.cached_tokens``.
``system_fingerprint`` is passed when the engine sent one and never invented.

Streams are touched only where a chunk needs it (the one that finishes, the ones that
start a tool call); every other chunk passes as the engine's bytes.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from gateway.chat.usage import Usage

Chunk = dict[str, Any]

FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
# what engines say instead: Anthropic-style and TGI names, SGLang/vLLM aborts
_FINISH_ALIASES = {"eos": "stop", "eos_token": "stop", "stop_sequence": "stop",
                   "end_turn": "stop", "max_tokens": "length", "model_length": "length",
                   "tool_use": "tool_calls", "abort": "stop"}


def finish_reason(value: Any, calls_tools: bool) -> str | None:
    """OpenAI's value for an engine's ``finish_reason`` (None stays None: not finished)."""
    if value is None:
        return None
    reason = value if value in FINISH_REASONS else _FINISH_ALIASES.get(str(value), "stop")
    if calls_tools and reason == "stop":
        return "tool_calls"  # llama.cpp and Ollama say "stop" after a tool call
    return reason


def tool_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def conform_tool_calls(calls: list[Any]) -> list[Any]:
    return [{**call, "id": call.get("id") or tool_call_id(),
             "type": call.get("type") or "function"} if isinstance(call, dict) else call
            for call in calls]


def conform_reply(body: dict[str, Any], kind: str = "chat.completion") -> None:
    """A whole (non-streamed) reply, in place."""
    body.setdefault("id", f"chatcmpl-{secrets.token_hex(12)}")
    body.setdefault("object", kind)
    body.setdefault("created", int(time.time()))
    for choice in body.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if isinstance(message, dict) and isinstance(calls, list):
            if calls:
                message["tool_calls"] = conform_tool_calls(calls)
            else:
                del message["tool_calls"]  # [] confuses clients that test for presence
        choice["finish_reason"] = finish_reason(choice.get("finish_reason"), bool(calls))


def conform_usage(sent: Any, usage: Usage) -> dict[str, Any]:
    """The engine's usage object with the counts of ``usage`` (the engine's own when it
    sent them, ours when it did not or the reply was cut at the limit), the total, and
    cached prompt tokens (llama.cpp reports those in ``timings``, not in usage); the
    engine's other details (``completion_tokens_details``) are kept."""
    out = {k: v for k, v in sent.items() if v is not None} if isinstance(sent, dict) else {}
    details = out.get("prompt_tokens_details")
    out.update(usage.to_api())
    if isinstance(details, dict):  # the engine's, completed rather than replaced
        out["prompt_tokens_details"] = {**out.get("prompt_tokens_details", {}), **details}
    return out


class StreamConformer:
    """Per stream: remembers which tool calls it has seen, to give a first chunk without
    an id one, and whether tools were called, for the finishing ``finish_reason``."""

    def __init__(self) -> None:
        self.calls_tools = False
        self._started: set[tuple[int, int]] = set()  # (choice, tool call index)

    def needs_look(self, data: bytes) -> bool:
        """Cheap byte test: only tool-call and finishing chunks may need a change."""
        if b'"tool_calls"' in data:
            return True
        return b'"finish_reason"' in data and not (
            b'"finish_reason":null' in data or b'"finish_reason": null' in data)

    def conform(self, chunk: Chunk) -> bool:
        """Fix ``chunk`` in place; True when it changed (it must be re-serialized)."""
        changed = False
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta")
            calls = delta.get("tool_calls") if isinstance(delta, dict) else None
            for call in calls or []:
                if not isinstance(call, dict):
                    continue
                self.calls_tools = True
                key = (index, call.get("index", 0))
                if key in self._started:
                    continue
                self._started.add(key)
                if not call.get("id"):
                    call["id"] = tool_call_id()
                    changed = True
                if not call.get("type"):
                    call["type"] = "function"
                    changed = True
            reason = choice.get("finish_reason")
            fixed = finish_reason(reason, self.calls_tools)
            if fixed != reason:
                choice["finish_reason"] = fixed
                changed = True
        return changed
