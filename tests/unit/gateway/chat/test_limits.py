"""The client's limits kept whatever the engine did: length cut, one tool call."""

from __future__ import annotations

import json
from typing import Any

from gateway.chat.limits import LengthGuard, ReplyLimits, limit_reply, single_tool_call
from gateway.chat.relay import RelayHooks, SseRelay, split_events
from gateway.chat.usage import Usage
from gateway.context import RequestContext
from gateway.metrics import Metrics
from tests.unit.gateway.chat.test_relay import reply_of
from tests.unit.gateway.conftest import delta_chunk, sse


async def words(text: str) -> int:
    return len(text.split())


def test_the_smaller_of_the_two_length_limits_is_the_limit() -> None:
    assert ReplyLimits.of({"max_tokens": 9, "max_completion_tokens": 4}).max_tokens == 4
    assert ReplyLimits.of({"max_completion_tokens": 7}).max_tokens == 7
    assert ReplyLimits.of({}) == ReplyLimits()
    assert ReplyLimits.of({"parallel_tool_calls": False}).single_tool_call


async def test_a_whole_reply_past_the_limit_is_cut_to_it_with_finish_length() -> None:
    body: dict[str, Any] = {"choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "one two three four five six"}}]}
    usage = await limit_reply(body, Usage(3, 6, "reported"), ReplyLimits(4), words)
    choice = body["choices"][0]
    assert choice["message"]["content"].split() == ["one", "two", "three", "four"]
    assert choice["finish_reason"] == "length"
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 4)


async def test_a_reply_within_the_limit_is_not_counted_again() -> None:
    calls: list[str] = []

    async def count(text: str) -> int:
        calls.append(text)
        return 1

    body = {"choices": [{"message": {"content": "fine"}, "finish_reason": "length"}]}
    usage = Usage(3, 4, "reported")
    assert await limit_reply(body, usage, ReplyLimits(4), count) is usage
    assert calls == []


async def test_one_tool_call_is_kept_when_parallel_calls_are_off() -> None:
    calls = [{"id": "a", "function": {"name": "f"}}, {"id": "b", "function": {"name": "g"}}]
    body: dict[str, Any] = {"choices": [{"message": {"content": None, "tool_calls": calls}}]}
    await limit_reply(body, Usage(1, 1, "reported"), ReplyLimits(single_tool_call=True), words)
    assert [c["id"] for c in body["choices"][0]["message"]["tool_calls"]] == ["a"]
    chunk = {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "b"}]}}]}
    assert single_tool_call(chunk) and "tool_calls" not in chunk["choices"][0]["delta"]


def test_the_guard_looks_at_chunks_only_once_events_outnumber_the_limit() -> None:
    guard = LengthGuard(2)
    assert not guard.exceeded_events() and not guard.exceeded_events()
    assert guard.exceeded_events()
    guard.start_counting([json.dumps(delta_chunk("a")).encode(),
                          json.dumps(delta_chunk(None, role="assistant")).encode()])
    assert guard.counts == {0: 1}
    assert guard.admit(delta_chunk("b")) == []
    over = delta_chunk("c")
    assert guard.admit(over) == [0] and over["choices"] == []
    assert guard.admit(delta_chunk("d")) == [] and guard.cut == {0}


async def relay_limited(body: bytes, limit: int) -> tuple[list[bytes], SseRelay, list[Any]]:
    completed: list[Any] = []

    async def count(text: str) -> Usage:
        return Usage(5, len(text), "counted")

    async def complete(message: dict[str, Any]) -> None:
        completed.append(message)

    ctx = RequestContext("r1", "POST", "/v1/chat/completions", model="m")
    ctx.backend = "b1"
    hooks = RelayHooks(count_usage=count, on_complete=complete,
                       limits=ReplyLimits(limit), count_text=words)
    relay = SseRelay(ctx, reply_of(body), Metrics(), hooks, True)
    # as the client reads them: the events of one backend read arrive in one write
    out = [event async for piece in relay.events() for event in split_events(piece)[0]]
    await relay.close()
    return out, relay, completed


async def test_a_stream_that_ignores_the_limit_is_stopped_at_it() -> None:
    tokens = [delta_chunk(None, role="assistant")] + [delta_chunk(t) for t in "abcdefgh"]
    out, relay, completed = await relay_limited(sse(*tokens, delta_chunk(None, "stop"),
                                                    "[DONE]"), limit=3)
    chunks = [json.loads(e[6:]) for e in out if e != b"data: [DONE]\n\n"]
    texts = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert [t for t in texts if t] == ["a", "b", "c"]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "length" and finish.count("length") == 1
    assert chunks[-1]["usage"]["completion_tokens"] == 3, "usage of what was sent"
    assert out[-1] == b"data: [DONE]\n\n"
    assert completed == [{"role": "assistant", "content": "abc"}]
    assert relay.enough and not relay.saw_done, "the rest of the engine's stream is not read"


async def test_a_stream_the_engine_kept_within_the_limit_passes_untouched() -> None:
    tokens = [delta_chunk(None, role="assistant"), delta_chunk("a"), delta_chunk("b"),
              delta_chunk(None, "length"), "[DONE]"]
    out, relay, _ = await relay_limited(sse(*tokens), limit=2)
    engine = [b"data: " + json.dumps(t).replace('"up"', '"m"').encode() + b"\n\n"
              for t in tokens[:4]]
    assert out[:4] == engine, "the engine's own bytes, the public model name only"
    assert relay.saw_done and not relay.enough
