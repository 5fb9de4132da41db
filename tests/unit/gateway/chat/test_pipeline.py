"""The whole pipeline over fake backends: stateless truncation, passages in the budget,
usage on every reply, interrupted turns, tool turns replayed per backend kind."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.unit.gateway.chat.test_assembly import FakePassage
from tests.unit.gateway.conftest import FakeFleet, chat_reply, delta_chunk, sse

SYSTEM = "You are a ship's cook."


def config(url: str, *, kind: str = "vllm", **model: Any) -> dict[str, Any]:
    return {"models": [{
        "name": "m", "tokenizer": {"source": "estimate"},
        "backends": [{"url": url, "model": "up", "kind": kind}], **model}]}


class Recorder:
    """Answers every chat, streamed or not, and keeps the bodies it received."""

    def __init__(self, fleet: FakeFleet, *, usage: bool = True, text: str = "fine thanks",
                 hostport: str = "b1:8000") -> None:
        self.bodies: list[dict[str, Any]] = []
        self.usage = usage
        self.text = text
        self.url = fleet.add(hostport, self)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/completions"):
            return httpx.Response(404)  # /metrics scrapes
        body = json.loads(request.content)
        self.bodies.append(body)
        if body.get("stream"):
            chunks = [delta_chunk(None, role="assistant"), delta_chunk(self.text[:4]),
                      delta_chunk(self.text[4:]), delta_chunk(None, finish="stop")]
            if self.usage:
                chunks.append({"id": "c", "object": "chat.completion.chunk", "model": "up",
                               "choices": [], "usage": {"prompt_tokens": 11,
                                                        "completion_tokens": 3,
                                                        "total_tokens": 14}})
            return httpx.Response(200, stream=httpx.ByteStream(sse(*chunks, "[DONE]")))
        reply = chat_reply(self.text)
        if not self.usage:
            del reply["usage"]
        return httpx.Response(200, json=reply)


def long_chat(turns: int, words: int = 40) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM}]
    for n in range(turns):
        messages.append({"role": "user", "content": f"question {n} " + "word " * words})
        messages.append({"role": "assistant", "content": f"answer {n} " + "text " * words})
    return messages


def ask(history: list[dict[str, str]], n: int) -> list[dict[str, str]]:
    return [*history, {"role": "user", "content": f"question {n} " + "word " * 40}]


async def test_a_stateless_chat_over_the_window_is_cut_in_steps(fleet: FakeFleet,
                                                                  make_client) -> None:
    backend = Recorder(fleet)
    cfg = config(backend.url, context_window=1200,
                 truncation={"reserve_completion_tokens": 100, "margin_tokens": 0})
    history: list[dict[str, str]] = [{"role": "system", "content": SYSTEM}]
    sent_lengths, headers = [], []
    async with make_client(cfg) as (client, _):
        for n in range(30):
            messages = ask(history, n)
            r = await client.post("/v1/chat/completions", json={"model": "m",
                                                               "messages": messages})
            assert r.status_code == 200, r.text
            headers.append(r.headers)
            sent = backend.bodies[-1]["messages"]
            sent_lengths.append(len(sent))
            assert sent[0] == {"role": "system", "content": SYSTEM}, "pinned never drops"
            assert sent[-1] == messages[-1]
            history = [*messages, {"role": "assistant", "content": "answer " + "text " * 40}]
    dropped = [int(h["x-ragate-dropped-messages"]) for h in headers]
    assert dropped[0] == 0 and dropped[-1] > 0, "the history was cut once it filled"
    cuts = [i for i in range(1, 30) if sent_lengths[i] < sent_lengths[i - 1]]
    assert 1 <= len(cuts) <= 10, f"cut in steps, not every turn: {sent_lengths}"
    for i in range(1, 30):
        if i in cuts:
            continue
        before, after = backend.bodies[i - 1]["messages"], backend.bodies[i]["messages"]
        assert after[:len(before)] == before, f"turn {i}: the prefix stayed byte-identical"
        reused, total = map(int, headers[i]["x-ragate-prefix-reuse"].split("/"))
        assert 0 < reused < total
    kept, stored = headers[-1]["x-ragate-history-turns"].split("/")
    assert int(kept) < int(stored) == 29


async def test_stateless_reject_and_none_modes(fleet: FakeFleet, make_client) -> None:
    backend = Recorder(fleet)
    messages = long_chat(30)
    for mode, status in (("reject", 400), ("none", 200)):
        cfg = config(backend.url, context_window=1200, stateless=mode)
        async with make_client(cfg) as (client, _):
            r = await client.post("/v1/chat/completions",
                                  json={"model": "m", "messages": ask(messages, 30)})
        assert r.status_code == status, (mode, r.text)
        if mode == "reject":
            assert r.json()["error"]["code"] == "context_length_exceeded"
        else:
            assert len(backend.bodies[-1]["messages"]) == 62, "none: passed through whole"
            assert "x-ragate-prefix-reuse" not in r.headers, "none: nothing counted"


async def test_no_context_window_means_no_counting(fleet: FakeFleet, make_client) -> None:
    backend = Recorder(fleet)
    async with make_client(config(backend.url)) as (client, _):
        r = await client.post("/v1/chat/completions",
                              json={"model": "m", "messages": ask(long_chat(40), 40)})
    assert r.status_code == 200 and len(backend.bodies[-1]["messages"]) == 82


@pytest.mark.parametrize("stream", [False, True])
async def test_usage_is_counted_when_the_backend_sends_none(fleet: FakeFleet, make_client,
                                                           stream: bool) -> None:
    backend = Recorder(fleet, usage=False)
    async with make_client(config(backend.url)) as (client, app):
        r = await client.post("/v1/chat/completions", json={
            "model": "m", "stream": stream, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "How are you today?"}]})
        metrics = (await client.get("/metrics")).text
    assert r.status_code == 200
    if stream:
        events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        usage_chunk = json.loads(events[-2])
        assert usage_chunk["choices"] == [] and usage_chunk["model"] == "m"
        usage = usage_chunk["usage"]
    else:
        usage = r.json()["usage"]
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 'ragate_tokens_total{direction="out",model="m",source="counted"}' in metrics


async def test_reported_usage_wins_and_is_dropped_unless_asked(fleet: FakeFleet,
                                                               make_client) -> None:
    backend = Recorder(fleet, usage=True)
    async with make_client(config(backend.url)) as (client, _):
        chat = {"model": "m", "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}
        plain = await client.post("/v1/chat/completions", json=chat)
        asked = await client.post("/v1/chat/completions",
                                  json={**chat, "stream_options": {"include_usage": True}})
        metrics = (await client.get("/metrics")).text
    assert '"usage"' not in plain.text
    usage_events = [line for line in asked.text.splitlines() if '"usage"' in line]
    assert len(usage_events) == 1 and '"prompt_tokens": 11' in usage_events[0]
    assert 'ragate_tokens_total{direction="in",model="m",source="reported"} 22.0' in metrics


class _CutOff(httpx.AsyncByteStream):
    async def __aiter__(self):
        yield sse(delta_chunk(None, role="assistant"), delta_chunk("Half a rep"))
        raise httpx.RemoteProtocolError("backend died")


async def test_a_stream_cut_mid_way_is_stored_as_interrupted(fleet: FakeFleet,
                                                            make_client) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        if len(calls) == 1:
            return httpx.Response(200, stream=_CutOff())
        return httpx.Response(200, json=chat_reply("whole reply"))

    url = fleet.add("b1:8000", handler)
    async with make_client(config(url, kind="llamacpp")) as (client, _):
        cid = (await client.post("/v1/conversations", json={})).json()["id"]
        r = await client.post("/v1/chat/completions", json={
            "model": "m", "stream": True, "conversation_id": cid,
            "messages": [{"role": "user", "content": "tell me"}]})
        assert '"error"' in r.text and "[DONE]" not in r.text
        items = (await client.get(f"/v1/conversations/{cid}/items")).json()["data"]
        assert [(i["role"], i["content"], i["status"]) for i in items] == [
            ("user", "tell me", "interrupted"), ("assistant", "Half a rep", "interrupted")]
        async with asyncio.timeout(2):  # the lock was released
            r = await client.post("/v1/chat/completions", json={
                "model": "m", "conversation_id": cid,
                "messages": [{"role": "user", "content": "go on"}]})
        assert r.status_code == 200
    assert [m["content"] for m in calls[1]["messages"]] == ["tell me", "Half a rep", "go on"], \
        "the interrupted turn is replayed with the text the user saw"


async def test_a_client_leaving_mid_stream_records_the_turn_as_interrupted(
        fleet: FakeFleet, make_client) -> None:
    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield sse(delta_chunk(None, role="assistant"), delta_chunk("Once upon"))
            await asyncio.sleep(3600)  # the backend is still generating when the client goes
            yield b""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v1/chat/completions":
            return httpx.Response(404)  # /metrics scrapes
        return httpx.Response(200, stream=Endless())

    url = fleet.add("b1:8000", handler)
    async with make_client(config(url)) as (client, app):
        cid = (await client.post("/v1/conversations", json={})).json()["id"]
        body = json.dumps({"model": "m", "stream": True, "conversation_id": cid,
                           "messages": [{"role": "user", "content": "a story"}]}).encode()
        # httpx's ASGITransport reads a response whole, so the app is driven by hand: the
        # client disconnects once the first words arrived
        seen_text, sent = asyncio.Event(), []

        async def receive() -> dict[str, Any]:
            if not sent:
                sent.append(True)
                return {"type": "http.request", "body": body, "more_body": False}
            await seen_text.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if b"Once upon" in message.get("body", b""):
                seen_text.set()

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "path": "/v1/chat/completions", "raw_path": b"",
                 "query_string": b"", "root_path": "", "scheme": "http",
                 "server": ("gw", 80), "client": ("127.0.0.1", 1),
                 "headers": [(b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())]}
        async with asyncio.timeout(5):
            await app(scope, receive, send)
        items = (await client.get(f"/v1/conversations/{cid}/items")).json()["data"]
        assert [(i["content"], i["status"]) for i in items] == [
            ("a story", "interrupted"), ("Once upon", "interrupted")]
        async with asyncio.timeout(2):  # the lock was released
            r = await client.get(f"/v1/conversations/{cid}")
        assert r.json()["turns"] == 1


async def test_a_tool_call_turn_is_replayed_in_the_backends_dialect(fleet: FakeFleet,
                                                                   make_client) -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        message = ({"role": "assistant", "content": None, "tool_calls": [call]}
                   if len(bodies) == 1 else {"role": "assistant", "content": "Sunny."})
        return httpx.Response(200, json={"id": "c", "object": "chat.completion", "model": "up",
                                         "choices": [{"index": 0, "message": message,
                                                      "finish_reason": "stop"}]})

    url = fleet.add("b1:8000", handler)
    async with make_client(config(url, kind="llamacpp")) as (client, _):
        cid = (await client.post("/v1/conversations", json={})).json()["id"]
        chat = {"model": "m", "conversation_id": cid}
        await client.post("/v1/chat/completions", json={
            **chat, "messages": [{"role": "user", "content": "Weather in Oslo?"}]})
        r = await client.post("/v1/chat/completions", json={
            **chat, "messages": [{"role": "tool", "tool_call_id": "call_1",
                                  "content": "sunny"}]})
        assert r.status_code == 200
        third = await client.post("/v1/chat/completions", json={
            **chat, "messages": [{"role": "user", "content": "Thanks!"}]})
        assert third.status_code == 200
        bad = await client.post("/v1/chat/completions", json={
            **chat, "messages": [{"role": "tool", "tool_call_id": "call_9", "content": "x"}]})
    assert bodies[1]["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert [m["role"] for m in bodies[2]["messages"]] == [
        "user", "assistant", "tool", "assistant", "user"]
    assert bad.status_code == 400 and "tool_call_id" in bad.json()["error"]["param"]
    assert len(bodies) == 3, "the broken request never reached the backend"


class FakeKnowledge:
    """Stands in for KnowledgeService.search: a different passage for every question."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    async def search(self, name: str, query: str, **_: Any) -> list[FakePassage]:
        self.queries.append(query)
        n = len(self.queries)
        return [FakePassage(f"Passage {n}: " + "fact " * 40, source="handbook.pdf", page=1,
                            chunk_id=f"c{n}"),
                FakePassage("Second passage " + "detail " * 60, source="handbook.pdf")]


@pytest.mark.parametrize("mode", ["system", "turn"])
async def test_passages_are_part_of_the_budget(fleet: FakeFleet, make_client,
                                               mode: str) -> None:
    backend = Recorder(fleet)
    cfg = config(backend.url, context_window=1000,
                 truncation={"reserve_completion_tokens": 100, "margin_tokens": 0},
                 knowledge={"knowledge_base": "kb", "mode": mode,
                            # room for the template and the first passage, not the second
                            "max_context_tokens": {"system": 250, "turn": 180}[mode]})
    history: list[dict[str, str]] = []
    async with make_client(cfg) as (client, app):
        app.state.services.chat.knowledge = FakeKnowledge()
        for n in range(20):
            messages = ask(history, n)
            r = await client.post("/v1/chat/completions", json={"model": "m",
                                                               "messages": messages})
            assert r.status_code == 200, r.text
            assert r.json()["ragate"]["sources"][0]["document"] == "handbook.pdf"
            counter = app.state.services.counter_for("m")
            sent = backend.bodies[-1]["messages"]
            assert sum(await counter.count(sent)) <= 900, "passages never overflow the window"
            reused, total = map(int, r.headers["x-ragate-prefix-reuse"].split("/"))
            assert total == sum(await counter.count(sent)), "reuse is about what was sent"
            if mode == "system" and n:
                assert reused <= sum(await counter.count(sent[:1])), \
                    "system mode: the passages change, so nothing after them is reused"
            history = [*messages, {"role": "assistant", "content": "answer " + "text " * 40}]
    text = json.dumps(backend.bodies[-1]["messages"])
    assert "Passage 20" in text and "Second passage" not in text, \
        "only what fits the reserve is injected"
    assert int(r.headers["x-ragate-dropped-messages"]) > 0


async def test_disabled_features_answer_404_on_every_route(fleet: FakeFleet,
                                                           make_client) -> None:
    backend = Recorder(fleet)
    async with make_client(config(backend.url)) as (client, app):
        chat = await client.post("/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "ragate": {"knowledge_base": "kb"}})
        listing = await client.get("/v1/knowledge_bases")
        app.state.services.chat.conversations = None
        app.state.services.conversations = None
        conv_chat = await client.post("/v1/chat/completions", json={
            "model": "m", "conversation_id": "conv_x",
            "messages": [{"role": "user", "content": "hi"}]})
        conv_list = await client.get("/v1/conversations")
    assert chat.status_code == listing.status_code == 404
    assert chat.json()["error"]["code"] == listing.json()["error"]["code"] == "knowledge_disabled"
    assert conv_chat.status_code == conv_list.status_code == 404
    assert conv_chat.json()["error"]["code"] == "conversations_disabled"
    assert conv_list.json()["error"]["code"] == "conversations_disabled"
