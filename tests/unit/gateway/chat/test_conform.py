"""Replies in OpenAI's current shape whatever the engine sent."""

from __future__ import annotations

import json
from typing import Any

from gateway.chat.conform import (
    StreamConformer,
    conform_reply,
    conform_usage,
    finish_reason,
)
from gateway.chat.usage import Usage


def test_finish_reasons_are_openais_values() -> None:
    assert finish_reason("stop", False) == "stop"
    assert finish_reason("eos", False) == "stop"
    assert finish_reason("abort", False) == "stop"
    assert finish_reason("max_tokens", False) == "length"
    assert finish_reason("stop", True) == "tool_calls"
    assert finish_reason(None, True) is None


def test_a_whole_reply_gets_ids_types_and_the_tool_calls_finish() -> None:
    body: dict[str, Any] = {"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": None,
        "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}}]}
    conform_reply(body)
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert "system_fingerprint" not in body, "never invented"
    kept = {"id": "x", "object": "chat.completion", "created": 5, "system_fingerprint": "fp",
            "choices": [{"message": {"content": "hi", "tool_calls": []},
                         "finish_reason": "stop"}]}
    conform_reply(kept)
    assert (kept["id"], kept["created"], kept["system_fingerprint"]) == ("x", 5, "fp")
    assert "tool_calls" not in kept["choices"][0]["message"]


def test_usage_is_completed_with_totals_and_cached_tokens() -> None:
    sent = {"prompt_tokens": 10, "completion_tokens": 2,
            "completion_tokens_details": {"reasoning_tokens": 0}}
    usage = conform_usage(sent, Usage(10, 2, "reported", cached_tokens=8))
    assert usage == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12,
                     "prompt_tokens_details": {"cached_tokens": 8},
                     "completion_tokens_details": {"reasoning_tokens": 0}}
    assert conform_usage(None, Usage(1, 1, "counted")) == {
        "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    assert conform_usage(sent, Usage(10, 1, "counted"))["completion_tokens"] == 1, (
        "a reply cut at the limit reports what is left")


def test_a_stream_gets_tool_call_ids_once_and_the_tool_calls_finish() -> None:
    conformer = StreamConformer()
    first = {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"name": "f", "arguments": ""}}]}, "finish_reason": None}]}
    more = {"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": "{}"}}]}, "finish_reason": None}]}
    last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    assert conformer.needs_look(json.dumps(first).encode())
    assert conformer.conform(first) and first["choices"][0]["delta"]["tool_calls"][0]["id"]
    assert not conformer.conform(more) and "id" not in more["choices"][0]["delta"][
        "tool_calls"][0]
    assert conformer.conform(last) and last["choices"][0]["finish_reason"] == "tool_calls"
    plain = StreamConformer()
    assert not plain.needs_look(b'{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}')
