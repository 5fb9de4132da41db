"""Chat on stored conversations, over fake backends: assembly, persistence, truncation."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from gateway.conversations.redis import RedisConversationStore
from tests.unit.gateway.conftest import FakeFleet, delta_chunk, sse

SYSTEM = "You are a ship's cook."


def model_config(url: str, **model: Any) -> dict[str, Any]:
    return {"models": [{
        "name": "m", "system_prompt": SYSTEM, "tokenizer": {"source": "estimate"},
        "backends": [{"url": url, "model": "up"}], **model,
    }]}


class EchoBackend:
    """Answers each chat with a numbered reply and records the prompts it received."""

    def __init__(self, fleet: FakeFleet, hostport: str = "b1:8000") -> None:
        self.prompts: list[list[dict[str, Any]]] = []
        self.url = fleet.add(hostport, self)
        self.delay = 0.0
        self.fail = False

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            return httpx.Response(500, text="backend exploded")
        messages = body["messages"]
        if messages[0]["content"].startswith("You maintain the memory"):
            return httpx.Response(200, json=_reply("SUMMARY of earlier turns"))
        self.prompts.append(messages)
        text = f"reply {len(self.prompts)}"
        if body.get("stream"):
            chunks = sse(delta_chunk(None, role="assistant"), delta_chunk(text[:3]),
                         delta_chunk(text[3:]), delta_chunk(None, finish="stop"), "[DONE]")
            return httpx.Response(200, stream=httpx.ByteStream(chunks))
        return httpx.Response(200, json=_reply(text))


def _reply(text: str) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion", "model": "up",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}


async def new_conversation(client: httpx.AsyncClient, **metadata: str) -> str:
    r = await client.post("/v1/conversations", json={"metadata": metadata})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


async def say(client: httpx.AsyncClient, cid: str, text: str, **extra: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={
        "model": "m", "conversation_id": cid,
        "messages": [{"role": "user", "content": text}], **extra})


async def stored(client: httpx.AsyncClient, cid: str) -> list[tuple[str, str]]:
    r = await client.get(f"/v1/conversations/{cid}/export")
    return [(i["role"], i["content"]) for i in r.json()["items"]]


async def test_history_is_prepended_and_both_turns_stored(fleet: FakeFleet, make_client) -> None:
    backend = EchoBackend(fleet)
    async with make_client(model_config(backend.url)) as (client, _):
        cid = await new_conversation(client, persona="Grumpy but kind.")
        first = await say(client, cid, "hello")
        assert first.status_code == 200
        second = await client.post("/v1/chat/completions", headers={"X-Conversation-Id": cid},
                                   json={"model": "m", "stream": True,
                                         "messages": [{"role": "user", "content": "again"}]})
        assert second.status_code == 200 and second.text.endswith("data: [DONE]\n\n")
        assert await stored(client, cid) == [
            ("user", "hello"), ("assistant", "reply 1"),
            ("user", "again"), ("assistant", "reply 2"),
        ]
    assert backend.prompts[1] == [
        {"role": "system", "content": SYSTEM},
        {"role": "system", "content": "Persona:\nGrumpy but kind."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "reply 1"},
        {"role": "user", "content": "again"},
    ]
    reused, total = map(int, second.headers["x-ragate-prefix-reuse"].split("/"))
    first_total = int(first.headers["x-ragate-prefix-reuse"].split("/")[1])
    assert first.headers["x-ragate-prefix-reuse"].startswith("0/")
    # the previous prompt and its reply ("reply 1": 2 tokens + 5 of template) are reusable:
    # the backend keeps the tokens it generated
    assert reused == first_total + 7 and total > reused


async def test_failed_request_leaves_the_conversation_as_it_was(fleet: FakeFleet,
                                                                make_client) -> None:
    backend = EchoBackend(fleet)
    async with make_client(model_config(backend.url)) as (client, _):
        cid = await new_conversation(client)
        await say(client, cid, "one")
        before = await client.get(f"/v1/conversations/{cid}")
        backend.fail = True
        assert (await say(client, cid, "two")).status_code == 500
        assert (await say(client, cid, "two", stream=True)).status_code == 500
        after = await client.get(f"/v1/conversations/{cid}")
        assert await stored(client, cid) == [("user", "one"), ("assistant", "reply 1")]
        assert after.json() == before.json()


async def test_concurrent_requests_are_serialised(fleet: FakeFleet, make_client) -> None:
    backend = EchoBackend(fleet)
    backend.delay = 0.05
    async with make_client(model_config(backend.url)) as (client, _):
        cid = await new_conversation(client)
        a, b = await asyncio.gather(say(client, cid, "first"), say(client, cid, "second"))
        assert a.status_code == b.status_code == 200
        items = await stored(client, cid)
    roles = [r for r, _ in items]
    assert roles == ["user", "assistant", "user", "assistant"], "never interleaved"
    # the later request saw the earlier turn in its prompt
    assert len(backend.prompts[1]) == len(backend.prompts[0]) + 2


async def test_busy_conversation_answers_409_when_not_waiting(fleet: FakeFleet,
                                                              make_client) -> None:
    backend = EchoBackend(fleet)
    backend.delay = 0.2
    config = {**model_config(backend.url), "conversations": {"lock_wait_s": 0}}
    async with make_client(config) as (client, _):
        cid = await new_conversation(client)
        slow = asyncio.create_task(say(client, cid, "first"))
        await asyncio.sleep(0.05)
        busy = await say(client, cid, "second")
        assert busy.status_code == 409
        assert busy.json()["error"]["code"] == "conversation_busy"
        assert (await slow).status_code == 200
        assert len(await stored(client, cid)) == 2


async def test_truncation_keeps_pinned_and_whole_turns(fleet: FakeFleet, make_client) -> None:
    backend = EchoBackend(fleet)
    config = model_config(backend.url, context_window=400, truncation={
        "strategy": "stepped", "reserve_completion_tokens": 50, "margin_tokens": 0,
        "low_water": 0.5})
    async with make_client(config) as (client, _):
        cid = await new_conversation(client)
        reuse = []
        for n in range(25):
            r = await say(client, cid, f"message number {n} " + "words " * 20)
            assert r.status_code == 200
            reuse.append(tuple(map(int, r.headers["x-ragate-prefix-reuse"].split("/"))))
        assert len(await stored(client, cid)) == 50, "truncation never deletes stored turns"
    for prompt in backend.prompts:
        assert prompt[0] == {"role": "system", "content": SYSTEM}
        body = prompt[1:]
        assert body[-1]["role"] == "user"
        assert [m["role"] for m in body] == ["user", "assistant"] * (len(body) // 2) + ["user"]
    kept = [len(p) for p in backend.prompts]
    assert kept[-1] < 25 * 2, "old turns were cut"
    cuts = sum(1 for a, b in zip(kept, kept[1:], strict=False) if b < a)
    full_reuse = sum(1 for used, total in reuse[1:] if used > 0)
    assert cuts >= 1 and full_reuse >= len(reuse) - 1 - cuts, "reuse is lost only at cuts"


async def test_summary_is_written_at_cut_points(fleet: FakeFleet, make_client) -> None:
    backend = EchoBackend(fleet)
    config = model_config(backend.url, context_window=600, truncation={
        "strategy": "stepped+summary", "reserve_completion_tokens": 50, "margin_tokens": 0,
        "summary_max_tokens": 60})
    async with make_client(config) as (client, _):
        cid = await new_conversation(client)
        for n in range(25):
            assert (await say(client, cid, f"fact {n}: " + "detail " * 20)).status_code == 200
        conversation = (await client.get(f"/v1/conversations/{cid}")).json()
    assert conversation["summary"]["text"] == "SUMMARY of earlier turns"
    last = backend.prompts[-1]
    assert last[0]["content"] == SYSTEM
    assert last[1]["content"].endswith("SUMMARY of earlier turns")
    assert conversation["summary"]["covers_turns"] > 0


async def test_client_system_message_is_pinned_for_that_request(fleet: FakeFleet,
                                                               make_client) -> None:
    backend = EchoBackend(fleet)
    async with make_client(model_config(backend.url)) as (client, _):
        cid = await new_conversation(client)
        await client.post("/v1/chat/completions", json={
            "model": "m", "conversation_id": cid,
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "hi"}]})
        assert backend.prompts[0][0] == {"role": "system", "content": "Be brief."}
        assert await stored(client, cid) == [("user", "hi"), ("assistant", "reply 1")]


async def test_tool_result_continues_the_turn_of_its_call(fleet: FakeFleet,
                                                          make_client) -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}
    replies = iter([
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "assistant", "content": "It is sunny."},
    ])

    def handler(req: httpx.Request) -> httpx.Response:
        message = next(replies)
        return httpx.Response(200, json={"id": "c", "object": "chat.completion", "model": "up",
                                         "choices": [{"index": 0, "message": message,
                                                      "finish_reason": "stop"}]})

    url = fleet.add("b1:8000", handler)
    async with make_client(model_config(url)) as (client, _):
        cid = await new_conversation(client)
        await say(client, cid, "Weather in Oslo?")
        await client.post("/v1/chat/completions", json={
            "model": "m", "conversation_id": cid,
            "messages": [{"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]})
        items = (await client.get(f"/v1/conversations/{cid}/items")).json()["data"]
        conversation = (await client.get(f"/v1/conversations/{cid}")).json()
    assert [i["role"] for i in items] == ["user", "assistant", "tool", "assistant"]
    assert {i["turn"] for i in items} == {0}, "the tool result stays in its call's turn"
    assert items[1]["tool_calls"] == [call]
    assert conversation["turns"] == 1


async def test_conversations_are_private_to_their_owner(fleet: FakeFleet, make_client) -> None:
    backend = EchoBackend(fleet)
    keys = {"auth": {"keys": [{"key": "sk-a", "owner": "alice"}, {"key": "sk-b", "owner": "bob"},
                              {"key": "sk-root", "role": "admin", "owner": "root"}]}}
    alice, bob = {"Authorization": "Bearer sk-a"}, {"Authorization": "Bearer sk-b"}
    root = {"Authorization": "Bearer sk-root"}
    async with make_client({**model_config(backend.url), **keys}) as (client, _):
        r = await client.post("/v1/conversations", json={}, headers=alice)
        cid = r.json()["id"]
        assert r.json()["owner"] == "alice"
        for method, path in [("GET", f"/v1/conversations/{cid}"),
                             ("GET", f"/v1/conversations/{cid}/items"),
                             ("DELETE", f"/v1/conversations/{cid}")]:
            assert (await client.request(method, path, headers=bob)).status_code == 404
        chat = await client.post("/v1/chat/completions", headers=bob, json={
            "model": "m", "conversation_id": cid,
            "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status_code == 404
        assert chat.json()["error"]["code"] == "conversation_not_found"
        assert (await client.get("/v1/conversations", headers=bob)).json()["data"] == []
        assert len((await client.get("/v1/conversations", headers=alice)).json()["data"]) == 1
        assert len((await client.get("/v1/conversations", headers=root)).json()["data"]) == 1
        assert (await client.get(f"/v1/conversations/{cid}", headers=root)).status_code == 200
        r = await client.delete(f"/v1/conversations/{cid}", headers=alice)
        assert r.json() == {"id": cid, "object": "conversation.deleted", "deleted": True}
        assert (await client.get(f"/v1/conversations/{cid}", headers=alice)).status_code == 404


async def test_items_api_and_metadata(fleet: FakeFleet, make_client) -> None:
    backend = EchoBackend(fleet)
    async with make_client(model_config(backend.url)) as (client, _):
        r = await client.post("/v1/conversations", json={
            "metadata": {"persona": "p"},
            "items": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
        cid = r.json()["id"]
        assert r.json()["turns"] == 1
        r = await client.post(f"/v1/conversations/{cid}/items", json={"items": [
            {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]})
        assert [i["content"] for i in r.json()["data"]] == ["c", "d"]
        page = (await client.get(f"/v1/conversations/{cid}/items?limit=3")).json()
        assert [i["content"] for i in page["data"]] == ["a", "b", "c"] and page["has_more"]
        rest = (await client.get(
            f"/v1/conversations/{cid}/items?limit=3&after={page['last_id']}")).json()
        assert [i["content"] for i in rest["data"]] == ["d"] and not rest["has_more"]
        r = await client.post(f"/v1/conversations/{cid}", json={"metadata": {"model": "m"}})
        assert r.json()["metadata"] == {"persona": "p", "model": "m"}
        bad = await client.post("/v1/conversations", json={"metadata": {"k": 1}})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "metadata.k"
        too_many = await client.post("/v1/conversations",
                                     json={"metadata": {str(i): "v" for i in range(17)}})
        assert too_many.status_code == 400


async def test_unknown_conversation_is_404(fleet: FakeFleet, make_client) -> None:
    backend = EchoBackend(fleet)
    async with make_client(model_config(backend.url)) as (client, _):
        r = await say(client, "conv_missing", "hi")
    assert r.status_code == 404 and r.json()["error"]["code"] == "conversation_not_found"
    assert backend.prompts == []


async def test_store_gone_is_503(fleet: FakeFleet, make_client) -> None:
    backend = EchoBackend(fleet)
    async with make_client(model_config(backend.url)) as (client, app):
        cid = await new_conversation(client)
        services = app.state.services
        dead = RedisConversationStore.from_url("redis://127.0.0.1:1/0")
        live, services.conversations.store = services.conversations.store, dead
        try:
            r = await say(client, cid, "hi")
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "conversation_store_unavailable"
            r = await client.get("/v1/conversations")
            assert r.status_code == 503
        finally:
            services.conversations.store = live
            await dead.close()
    assert backend.prompts == []


@pytest.mark.parametrize("stream", [False, True])
async def test_context_overflow_is_a_clear_400(fleet: FakeFleet, make_client,
                                               stream: bool) -> None:
    backend = EchoBackend(fleet)
    config = model_config(backend.url, context_window=300,
                          truncation={"reserve_completion_tokens": 100})
    async with make_client(config) as (client, _):
        cid = await new_conversation(client)
        r = await say(client, cid, "word " * 2000, stream=stream)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"


async def test_strategy_none_refuses_a_conversation_past_the_window(fleet: FakeFleet,
                                                                    make_client) -> None:
    backend = EchoBackend(fleet)
    config = model_config(backend.url, context_window=400, truncation={
        "strategy": "none", "reserve_completion_tokens": 50, "margin_tokens": 0})
    async with make_client(config) as (client, _):
        cid = await new_conversation(client)
        codes = [(await say(client, cid, "words " * 40)).status_code for _ in range(8)]
    assert codes[0] == 200 and codes[-1] == 400
    assert len(backend.prompts) == codes.count(200), "nothing over the window reaches a backend"
