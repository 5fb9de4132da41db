"""The OpenAI routes over fake backends: replies, streams, errors in OpenAI's shape."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.unit.gateway.conftest import CHAT, FakeFleet, chat_reply, delta_chunk, one_model, sse


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


async def test_models_list_shows_the_registry(fleet: FakeFleet, make_client) -> None:
    async with make_client({"models": [{"name": "a"}, {"name": "b"}]}) as (client, _):
        r = await client.get("/v1/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["a", "b"]
    assert r.json()["object"] == "list"


async def test_chat_reply_is_passed_through_with_public_model(fleet: FakeFleet,
                                                              make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply("hi there")))
    async with make_client(one_model(url)) as (client, _):
        r = await client.post("/v1/chat/completions", json={**CHAT, "temperature": 0.2,
                                                             "top_k": 5, "min_p": 0.1})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "hi there"
    assert r.json()["model"] == "m"
    sent = fleet.calls[-1][2]
    assert sent["model"] == "up", "the backend gets its own model name"
    assert sent["temperature"] == 0.2 and sent["top_k"] == 5 and sent["min_p"] == 0.1
    assert r.headers["x-request-id"]


async def test_strict_openai_backend_gets_only_openai_params(fleet: FakeFleet,
                                                             make_client) -> None:
    url = fleet.add("api:443", lambda req: httpx.Response(200, json=chat_reply()))
    async with make_client(one_model(url, kind="openai")) as (client, _):
        await client.post("/v1/chat/completions", json={**CHAT, "top_k": 5, "seed": 1})
    sent = fleet.calls[-1][2]
    assert "top_k" not in sent and sent["seed"] == 1


async def test_gateway_fields_never_reach_the_backend(fleet: FakeFleet, make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    async with make_client(one_model(url)) as (client, _):
        await client.post("/v1/chat/completions", json={**CHAT, "ragate": {"top_k": 3},
                                                        "conversation_id": None})
        assert "ragate" not in fleet.calls[-1][2]
        assert "conversation_id" not in fleet.calls[-1][2]
        r = await client.post("/v1/chat/completions",
                              json={**CHAT, "ragate": {"knowledge_base": "kb"}})
        assert r.status_code == 404 and r.json()["error"]["code"] == "knowledge_disabled"
        r = await client.post("/v1/chat/completions", json={**CHAT, "ragate": {"mode": "x"}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "ragate.mode"


async def test_request_id_is_echoed_and_forwarded(fleet: FakeFleet, make_client) -> None:
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        if "x-request-id" in req.headers:
            seen.append(req.headers["x-request-id"])
        return httpx.Response(200, json=chat_reply())

    url = fleet.add("b1:8000", handler)
    uuid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    async with make_client(one_model(url)) as (client, _):
        r = await client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-Id": uuid})
        assert r.headers["x-request-id"] == uuid and seen == [uuid]
        # llama-cpp-python refuses ids that are not UUIDs: echoed, but not forwarded
        r = await client.post("/v1/chat/completions", json=CHAT,
                              headers={"X-Request-Id": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123" and len(seen) == 1


async def test_legacy_completions(fleet: FakeFleet, make_client) -> None:
    reply = {"id": "c", "object": "text_completion", "model": "up",
             "choices": [{"text": "once", "index": 0, "finish_reason": "length"}]}
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=reply))
    async with make_client(one_model(url)) as (client, _):
        r = await client.post("/v1/completions", json={"model": "m", "prompt": "Once"})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == "once"
    assert [path for _, path, _ in fleet.calls if path.endswith("completions")] == [
        "/v1/completions"]
    usage = r.json()["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0, \
        "the backend sent no usage: the gateway counted it"


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("body, param", [
    (b"{not json", None),
    (b"[1, 2]", None),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model"),
    (json.dumps({"model": "m", "messages": []}).encode(), "messages"),
    (json.dumps({"model": "m", "messages": [{"role": "robot", "content": "x"}]}).encode(),
     "messages.0.role"),
    (json.dumps({**CHAT, "temperature": 7}).encode(), "temperature"),
    (json.dumps({**CHAT, "max_tokens": 0}).encode(), "max_tokens"),
])
async def test_malformed_requests_get_400(fleet: FakeFleet, make_client, body: bytes,
                                          param: str | None) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    async with make_client(one_model(url)) as (client, _):
        r = await client.post("/v1/chat/completions", content=body)
    assert r.status_code == 400
    err = error_of(r)
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert fleet.chat_calls() == [], "nothing reaches a backend"


TOOL = {"type": "function", "function": {"name": "f", "parameters": {}}}


@pytest.mark.parametrize("fields, param", [
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": "no"}}, "stream_options.include_usage"),
    ({"logit_bias": {"token": 1}}, "logit_bias.token.[key]"),
    ({"logit_bias": {"42": 500}}, "logit_bias.42"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
     "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"response_format": {"type": "regex"}}, "response_format.type"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]},
     "tools.0.function.name"),
])
async def test_parameters_engines_would_choke_on_get_400_naming_them(
        fleet: FakeFleet, make_client, fields: dict[str, object], param: str) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    async with make_client(one_model(url)) as (client, _):
        r = await client.post("/v1/chat/completions", json={**CHAT, **fields})
    assert r.status_code == 400, r.text
    assert error_of(r)["param"] == param
    assert fleet.chat_calls() == []


async def test_what_the_backend_kind_cannot_honour_is_refused_before_it_is_called(
        fleet: FakeFleet, make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    async with make_client(one_model(url, kind="llamacpp")) as (client, _):
        r = await client.post("/v1/chat/completions", json={**CHAT, "n": 2})
        assert r.status_code == 400 and error_of(r)["param"] == "n"
        assert error_of(r)["code"] == "unsupported_value"
        assert fleet.chat_calls() == []
        ok = await client.post("/v1/chat/completions",
                               json={**CHAT, "max_completion_tokens": 7})
        assert ok.status_code == 200
    sent = fleet.calls[-1][2]
    assert sent["max_tokens"] == 7 and "max_completion_tokens" not in sent


async def test_a_strict_backend_names_what_it_did_not_get(fleet: FakeFleet,
                                                          make_client) -> None:
    url = fleet.add("api:443", lambda req: httpx.Response(200, json=chat_reply()))
    async with make_client(one_model(url, kind="openai")) as (client, _):
        r = await client.post("/v1/chat/completions", json={**CHAT, "top_k": 5, "min_p": 1})
    assert r.headers["x-ragate-dropped-params"] == "min_p,top_k"


async def test_unknown_model_is_404(fleet: FakeFleet, make_client) -> None:
    async with make_client(one_model(fleet.add("b1:1", lambda r: httpx.Response(200)))) as (c, _):
        r = await c.post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"})
    assert r.status_code == 404
    assert error_of(r)["code"] == "model_not_found"


async def test_body_too_large_is_413(fleet: FakeFleet, make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    config = {**one_model(url), "server": {"max_body_bytes": 2048}}
    huge = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    async with make_client(config) as (client, _):
        r = await client.post("/v1/chat/completions", json=huge)
        assert r.status_code == 413
        assert error_of(r)["code"] == "payload_too_large"

        async def chunked():  # no content-length: the limit is enforced while reading
            yield json.dumps(huge).encode()

        r = await client.post("/v1/chat/completions", content=chunked())
        assert r.status_code == 413
    assert fleet.chat_calls() == []


async def test_no_healthy_backend_is_503(fleet: FakeFleet, make_client) -> None:
    async with make_client(one_model("http://dead1:1", "http://dead2:2")) as (client, _):
        r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 503
    assert error_of(r)["code"] == "no_healthy_backend"


async def test_timeout_is_504_after_trying_each_backend(fleet: FakeFleet, make_client) -> None:
    def slow(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=req)

    a, b = fleet.add("a:1", slow), fleet.add("b:1", slow)
    async with make_client(one_model(a, b)) as (client, _):
        r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 504
    assert error_of(r)["type"] == "timeout_error"
    assert sorted(fleet.chat_calls()) == ["a:1", "b:1"]


async def test_upstream_4xx_is_passed_through_not_retried(fleet: FakeFleet, make_client) -> None:
    body = {"error": {"message": "prompt too long", "type": "invalid_request_error",
                      "param": "messages", "code": "context_length_exceeded"}}
    a = fleet.add("a:1", lambda req: httpx.Response(400, json=body))
    b = fleet.add("b:1", lambda req: httpx.Response(400, json=body))
    async with make_client(one_model(a, b)) as (client, _):
        r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 400
    assert error_of(r) == body["error"]
    assert len(fleet.chat_calls()) == 1


async def test_upstream_error_of_any_shape_becomes_openai_shape(fleet: FakeFleet,
                                                                make_client) -> None:
    a = fleet.add("a:1", lambda req: httpx.Response(422, json={"detail": "bad field"}))
    async with make_client(one_model(a)) as (client, _):
        r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 422 and error_of(r)["message"] == "bad field"


async def test_5xx_is_retried_on_another_backend(fleet: FakeFleet, make_client) -> None:
    a = fleet.add("a:1", lambda req: httpx.Response(500, text="boom"))
    b = fleet.add("b:1", lambda req: httpx.Response(200, json=chat_reply("from b")))
    async with make_client(one_model(a, b)) as (client, _):
        for _ in range(4):
            r = await client.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "from b"


async def test_5xx_everywhere_passes_the_last_status(fleet: FakeFleet, make_client) -> None:
    a = fleet.add("a:1", lambda req: httpx.Response(502, text="bad gateway upstream"))
    async with make_client(one_model(a)) as (client, _):
        r = await client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 502
    assert "bad gateway upstream" in error_of(r)["message"]


async def test_connect_error_goes_to_the_other_backend_silently(fleet: FakeFleet,
                                                                 make_client) -> None:
    b = fleet.add("b:1", lambda req: httpx.Response(200, json=chat_reply("ok")))
    async with make_client(one_model("http://gone:1", b)) as (client, app):
        for _ in range(5):
            r = await client.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 200
        pool = app.state.services.pool
        assert pool.backends["gone:1"].state() == "unhealthy"


async def test_breaker_opens_and_skips_a_failing_backend(fleet: FakeFleet, make_client) -> None:
    a = fleet.add("a:1", lambda req: httpx.Response(503, text="overloaded"))
    b = fleet.add("b:1", lambda req: httpx.Response(200, json=chat_reply()))
    config = {**one_model(a, b), "pool": {"breaker": {"failure_threshold": 2,
                                                       "reset_timeout_s": 60}}}
    async with make_client(config) as (client, app):
        for _ in range(10):
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert fleet.chat_calls().count("a:1") == 2
        assert app.state.services.pool.backends["a:1"].state() == "breaker_open"


# -- streaming ---------------------------------------------------------------------------


def stream_response(body: bytes) -> httpx.Response:
    return httpx.Response(200, stream=httpx.ByteStream(body),
                          headers={"content-type": "text/event-stream"})


async def test_stream_is_relayed_with_public_model_and_done(fleet: FakeFleet,
                                                            make_client) -> None:
    body = sse(delta_chunk(None, role="assistant"), delta_chunk("Hel"), delta_chunk("lo"),
               delta_chunk(None, finish="stop"), "[DONE]", sep=b"\r\n\r\n")
    url = fleet.add("b1:8000", lambda req: stream_response(body))
    async with make_client(one_model(url)) as (client, _):
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [e for e in r.text.replace("\r\n", "\n").split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello"
    assert {c["model"] for c in chunks} == {"m"}
    sent = [body for _, path, body in fleet.calls if path == "/v1/chat/completions"][-1]
    assert sent["stream_options"] == {"include_usage": True}


async def test_usage_chunk_only_when_the_client_asked(fleet: FakeFleet, make_client) -> None:
    usage = {"id": "c", "object": "chat.completion.chunk", "model": "up", "choices": [],
             "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}
    body = sse(delta_chunk("hi"), delta_chunk(None, finish="stop"), usage, "[DONE]")
    url = fleet.add("b1:8000", lambda req: stream_response(body))
    async with make_client(one_model(url)) as (client, app):
        plain = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        asked = await client.post("/v1/chat/completions", json={
            **CHAT, "stream": True, "stream_options": {"include_usage": True}})
        metrics = (await client.get("/metrics")).text
    assert '"usage"' not in plain.text
    assert '"prompt_tokens": 9' in asked.text
    assert 'ragate_tokens_total{direction="in",model="m",source="reported"} 18.0' in metrics


async def test_missing_done_is_added_after_a_finished_stream(fleet: FakeFleet,
                                                             make_client) -> None:
    body = sse(delta_chunk("hi"), delta_chunk(None, finish="stop"))
    url = fleet.add("b1:8000", lambda req: stream_response(body))
    async with make_client(one_model(url)) as (client, _):
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert r.text.endswith("data: [DONE]\n\n")


class _BreaksAfter(httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def __aiter__(self):
        for part in self.parts:
            yield part
            await asyncio.sleep(0)
        raise httpx.RemoteProtocolError("peer closed connection")


async def test_mid_stream_failure_ends_with_one_error_event(fleet: FakeFleet,
                                                            make_client) -> None:
    calls = {"b": 0}
    parts = [sse(delta_chunk("par")), sse(delta_chunk("tial"))]
    a = fleet.add("a:1", lambda req: httpx.Response(200, stream=_BreaksAfter(parts)))

    def b_handler(req: httpx.Request) -> httpx.Response:
        calls["b"] += 1
        return httpx.Response(200, json=chat_reply())

    b = fleet.add("b:1", b_handler)
    async with make_client(one_model(a, b)) as (client, app):
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        metrics = (await client.get("/metrics")).text
    events = [e for e in r.text.split("\n\n") if e]
    assert len(events) == 3
    error = json.loads(events[-1][6:])
    assert error["error"]["type"] == "upstream_error"
    assert "mid-stream" in error["error"]["message"]
    assert "[DONE]" not in r.text
    assert calls["b"] == 0, "nothing is retried after bytes went out"
    assert 'ragate_stream_errors_total{backend="a:1",model="m"} 1.0' in metrics
    assert app.state.services.pool.backends["a:1"].in_flight == 0


async def test_stream_that_dies_before_first_byte_is_retried(fleet: FakeFleet,
                                                             make_client) -> None:
    a = fleet.add("a:1", lambda req: httpx.Response(200, stream=_BreaksAfter([])))
    body = sse(delta_chunk("ok"), delta_chunk(None, finish="stop"), "[DONE]")
    b = fleet.add("b:1", lambda req: stream_response(body))
    async with make_client(one_model(a, b)) as (client, _):
        r = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert "error" not in r.text and r.text.endswith("data: [DONE]\n\n")
    assert fleet.chat_calls() == ["a:1", "b:1"]


@pytest.mark.parametrize("how", ["header", "user"])
async def test_stateless_session_key_makes_routing_sticky(fleet: FakeFleet, make_client,
                                                          how: str) -> None:
    urls = [fleet.add(f"b{i}:1", lambda req: httpx.Response(200, json=chat_reply()))
            for i in range(4)]
    async with make_client(one_model(*urls, policy="session")) as (client, _):
        served = {}
        for session in ("alice", "bob", "carol", "dave", "erin", "frank"):
            seen = set()
            for _ in range(3):
                if how == "header":
                    r = await client.post("/v1/chat/completions", json=CHAT,
                                          headers={"X-Session-Id": session})
                else:
                    r = await client.post("/v1/chat/completions", json={**CHAT, "user": session})
                assert r.status_code == 200
                seen.add(r.headers["x-ragate-backend"])
            assert len(seen) == 1, f"{session} moved: {seen}"
            served[session] = seen.pop()
    assert len(set(served.values())) > 1


async def test_an_unexpected_error_on_the_hot_path_is_a_500_in_openai_shape(
        fleet: FakeFleet, make_client) -> None:
    """The proxy routes skip FastAPI's middleware stack (api/hotpath.py): its server-error
    answer is theirs too, with the request id and the log line's error."""
    url = fleet.add("b1:8000", lambda request: httpx.Response(200, json=chat_reply()))
    async with make_client(one_model(url)) as (client, app):
        async def broken(*_: object) -> None:
            raise RuntimeError("a bug")

        app.state.services.chat_pipeline.chat = broken
        response = await client.post("/v1/chat/completions", json=CHAT,
                                     headers={"x-request-id": "req-500"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "a bug" not in response.text, "no internals to the client"
    assert response.headers["x-request-id"] == "req-500"
