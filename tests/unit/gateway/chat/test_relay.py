"""Step 7 alone: the SSE relay over a scripted backend stream, hooks called as promised."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from gateway.backends import Target, UpstreamReply
from gateway.backends.backend import Backend
from gateway.backends.transport import TransportProtocolError
from gateway.chat.relay import RelayHooks, SseRelay, split_events
from gateway.chat.upstream import backend_payload
from gateway.chat.usage import Usage
from gateway.context import RequestContext
from gateway.metrics import Metrics
from gateway.settings import BackendConfig, PoolConfig
from tests.unit.gateway.conftest import delta_chunk, sse


def reply_of(*parts: bytes, fail: bool = False) -> UpstreamReply:
    backend = Backend("b1", BackendConfig(url="http://b1:1"), PoolConfig())

    async def chunks() -> AsyncIterator[bytes]:
        for part in parts[1:]:
            yield part
        if fail:
            raise TransportProtocolError("reset")

    backend.begin()
    return UpstreamReply(Target(backend, "up"), 200, {}, 1, parts[0], chunks())


class Hooks:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def build(self) -> RelayHooks:
        async def count(text: str) -> Usage:
            self.calls.append(("count", text))
            return Usage(7, 2, "counted")

        async def complete(message: dict[str, Any]) -> None:
            self.calls.append(("complete", message))

        async def interrupt(message: dict[str, Any]) -> None:
            self.calls.append(("interrupt", message))

        async def close() -> None:
            self.calls.append(("close", None))

        return RelayHooks(count_usage=count, on_complete=complete, on_interrupt=interrupt,
                          on_close=close)


async def relay(reply: UpstreamReply, hooks: Hooks, wants_usage: bool) -> list[bytes]:
    ctx = RequestContext("r1", "POST", "/v1/chat/completions", model="m")
    ctx.backend = "b1"
    r = SseRelay(ctx, reply, Metrics(), hooks.build(), wants_usage)
    # as the client reads them: the events of one backend read arrive in one write
    out = [event async for piece in r.events() for event in split_events(piece)[0]]
    await r.close()
    return out


async def test_a_finished_stream_is_completed_counted_and_closed_in_order() -> None:
    hooks = Hooks()
    body = sse(delta_chunk(None, role="assistant"), delta_chunk("Hel"), delta_chunk("lo"),
               delta_chunk(None, finish="stop"), "[DONE]", sep=b"\r\n\r\n")
    out = await relay(reply_of(body[:40], body[40:]), hooks, wants_usage=True)
    assert [name for name, _ in hooks.calls] == ["count", "complete", "close"]
    assert hooks.calls[0][1] == "Hello"
    assert hooks.calls[1][1] == {"role": "assistant", "content": "Hello"}
    assert out[-1] == b"data: [DONE]\n\n"
    usage = json.loads(out[-2][6:])
    assert usage["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert usage["choices"] == [] and usage["model"] == "m" and usage["id"] == "c"
    assert all(b'"model": "m"' in e for e in out[:-2]), "the public model name"


async def test_a_stream_failing_mid_way_is_interrupted_with_what_was_said() -> None:
    hooks = Hooks()
    out = await relay(reply_of(sse(delta_chunk("Half")), fail=True), hooks, wants_usage=False)
    assert [name for name, _ in hooks.calls] == ["count", "interrupt", "close"]
    assert hooks.calls[1][1] == {"role": "assistant", "content": "Half"}
    assert b'"error"' in out[-1] and b"[DONE]" not in b"".join(out)


def test_the_backend_payload_drops_gateway_fields_and_asks_for_usage() -> None:
    data = {"model": "m", "ragate": {}, "conversation_id": "c", "stream": True,
            "stream_options": {"include_usage": False, "x": 1}, "messages": ["old"]}
    assert backend_payload(data, messages=["new"]) == {
        "model": "m", "stream": True, "messages": ["new"],
        "stream_options": {"include_usage": True, "x": 1}}
    assert "stream_options" not in backend_payload({"model": "m", "stream": False})
