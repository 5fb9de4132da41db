"""One client's bad requests never hurt another's: what the breaker counts, what a client
sees of a backend's error, and bad input that must be a 4xx and never stored."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.errors import BadRequestError, public_message
from gateway.json_body import parse_json_body
from tests.unit.gateway.conftest import CHAT, FakeFleet, chat_reply, one_model

# what llama-cpp-python 0.3.36 answered, verbatim, to a request it could not validate
LLAMACPP_500 = {"error": {"message": (
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
    "'type'), 'msg': \"Input should be 'text' or 'json_object'\"}\n\n  File "
    "\"/work/main/.venv/lib/python3.11/site-packages/llama_cpp/server/app.py\", line 376, "
    "in create_chat_completion\n    POST /v1/chat/completions"),
    "type": "internal_server_error", "param": None, "code": None}}


async def test_a_500_the_request_caused_is_a_400_and_never_opens_the_breaker(
        fleet: FakeFleet, make_client) -> None:
    a = fleet.add("a:1", lambda req: httpx.Response(500, json=LLAMACPP_500))
    b = fleet.add("b:1", lambda req: httpx.Response(500, json=LLAMACPP_500))
    config = {**one_model(a, b, kind="llamacpp"),
              "pool": {"breaker": {"failure_threshold": 3, "reset_timeout_s": 60}}}
    async with make_client(config) as (client, app):
        for _ in range(5):
            r = await client.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 400
            error = r.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert "site-packages" not in error["message"] and "File" not in error["message"]
            assert "validation error" in error["message"]
        assert len(fleet.chat_calls()) == 5, "not retried on the other backend"
        pool = app.state.services.pool
        assert {pool.backends[n].state() for n in ("a:1", "b:1")} == {"healthy"}


async def test_a_real_backend_failure_still_counts_and_is_cleaned(fleet: FakeFleet,
                                                                  make_client) -> None:
    trace = ("Traceback (most recent call last):\n  File \"/srv/vllm/engine.py\", line 9\n"
             "RuntimeError: CUDA out of memory")
    a = fleet.add("a:1", lambda req: httpx.Response(500, json={"error": {"message": trace}}))
    config = {**one_model(a, kind="vllm"), "pool": {"breaker": {"failure_threshold": 2}}}
    async with make_client(config) as (client, app):
        for _ in range(2):
            r = await client.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 500
            assert r.json()["error"]["message"] == "RuntimeError: CUDA out of memory"
        assert app.state.services.pool.backends["a:1"].state() == "breaker_open"


def test_public_messages_carry_no_paths_or_tracebacks() -> None:
    text = public_message('ValueError at /usr/lib/python3.11/json/decoder.py:353: bad\n'
                          '  File "/x/y.py", line 2, in f')
    assert text == "ValueError at <path>: bad"


@pytest.mark.parametrize("raw, param", [
    (b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}',
     "messages.0.content"),
    (b'{"model": "m", "metadata": {"\\udfff": 1}}', "metadata.[key]"),
    (b"[" * 65 + b"]" * 65, None),
    (b'{"metadata": ' + b"[" * 70 + b"]" * 70 + b"}", "metadata"),
    (b"[" * 5000 + b"]" * 5000, None),
])
def test_lone_surrogates_and_deep_nesting_are_400(raw: bytes, param: str | None) -> None:
    with pytest.raises(BadRequestError) as err:
        parse_json_body(raw)
    assert err.value.param == param


def test_ordinary_bodies_pass_including_real_surrogate_pairs() -> None:
    assert parse_json_body(b'{"text": "\\ud83d\\ude00 ok"}') == {"text": "\U0001f600 ok"}
    assert parse_json_body(json.dumps({"a": [[[[1]]]]}).encode())


async def test_bad_input_is_400_on_every_json_route_and_nothing_is_stored(
        fleet: FakeFleet, make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    headers = {"content-type": "application/json"}
    async with make_client(one_model(url)) as (client, _):
        chat = await client.post("/v1/chat/completions", headers=headers, content=(
            b'{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}]}'))
        assert chat.status_code == 400
        assert chat.json()["error"]["param"] == "messages.0.content"
        stored = await client.post("/v1/conversations", headers=headers,
                                   content=b'{"metadata": {"note": "\\ud800"}}')
        assert stored.status_code == 400
        assert stored.json()["error"]["param"] == "metadata.note"
        deep = await client.post("/v1/conversations", headers=headers,
                                 content=b'{"metadata": ' + b"[" * 3000 + b"]" * 3000 + b"}")
        assert deep.status_code == 400
        listed = await client.get("/v1/conversations")
        assert listed.status_code == 200 and listed.json()["data"] == []
    assert fleet.chat_calls() == []


async def test_a_chunked_body_over_the_limit_is_413_on_every_route(fleet: FakeFleet,
                                                                    make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    config = {**one_model(url), "server": {"max_body_bytes": 2048}}

    async def chunks():  # no Content-Length: the limit trips while the route reads
        for _ in range(10):
            yield b" " * 1024

    async with make_client(config) as (client, _):
        for path, content_type in (("/v1/conversations", "application/json"),
                                   ("/v1/chat/completions", "application/json"),
                                   ("/v1/conversations", "text/plain")):
            r = await client.post(path, content=chunks(), headers={"content-type": content_type})
            assert r.status_code == 413, (path, content_type, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"


async def test_a_request_whose_client_left_a_stream_is_still_finished_once() -> None:
    from gateway.metrics import Metrics
    from gateway.middleware import RequestMiddleware

    async def streaming_app(scope, receive, send):  # noqa: ANN001
        # what Starlette does when the client goes: the stream is cancelled and the app
        # returns without the last body message
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})

    finished = []
    app = RequestMiddleware(streaming_app, 1 << 20, Metrics(), on_finish=finished.append)
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}

    async def receive():  # noqa: ANN202
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):  # noqa: ANN001, ANN202
        return None

    await app(scope, receive, send)
    assert len(finished) == 1, "settled and logged once, though no last byte went out"
