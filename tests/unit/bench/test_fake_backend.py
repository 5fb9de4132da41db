"""The benchmark's fake OpenAI backend answers like an OpenAI server, over real sockets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from bench.fake_backend import CONTENT, MODEL, start_server

CHAT = {"model": "anything", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    server = await start_server("127.0.0.1", 0, chunks=4)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            yield c
    finally:
        server.close()
        await server.wait_closed()


async def test_chat_completion(client: httpx.AsyncClient) -> None:
    for _ in range(3):  # the same keep-alive connection answers again
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["object"] == "chat.completion"
        assert body["model"] == MODEL
        assert body["choices"][0]["message"] == {"role": "assistant", "content": CONTENT}
        assert body["usage"]["total_tokens"] == 20


def _events(text: str) -> list[str]:
    assert text.endswith("\n\n")
    return [e.removeprefix("data: ") for e in text.split("\n\n")[:-1]]


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream(client: httpx.AsyncClient, include_usage: bool) -> None:
    request = {**CHAT, "stream": True, "stream_options": {"include_usage": include_usage}}
    async with client.stream("POST", "/v1/chat/completions", json=request) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        text = (await r.aread()).decode()
    events = _events(text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert content == CONTENT
    assert [ch["finish_reason"] for c in chunks for ch in c["choices"]][-1] == "stop"
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage == ([{"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}]
                     if include_usage else [])


async def test_models_health_and_unknown_route(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == [MODEL]
    assert (await client.get("/health")).json() == {"status": "ok"}
    r = await client.get("/nope")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"


async def test_chunked_request_body_and_connection_close(client: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:  # no length known: httpx sends it chunked
        yield b'{"model": "x", "stream": '
        yield b"true}"

    r = await client.post("/v1/chat/completions", content=body(),
                          headers={"connection": "close"})
    assert r.status_code == 200
    assert r.text.endswith("data: [DONE]\n\n")
    assert r.headers["connection"] == "close"
