"""The simulated vLLM replica: cache accounting on the core classes, then one HTTP round trip."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from serving.sim import PrefixCache, Replica, SimApp, filler, render_chat, tokenize


def toks(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_repeated_prefix_hits_whole_blocks() -> None:
    cache = PrefixCache(capacity_blocks=100, block_tokens=16)
    prompt = toks("a", 64)
    assert cache.lookup(prompt) == 0
    cache.insert(prompt)
    assert len(cache) == 4
    # the same prompt again: vLLM recomputes the last token, so the last block is not a hit
    assert cache.lookup(prompt) == 48
    # a longer prompt with the same head reuses all four blocks
    assert cache.lookup(prompt + toks("b", 10)) == 64
    assert (cache.queries, cache.hits) == (64 + 64 + 74, 48 + 64)


def test_a_prefix_shorter_than_a_block_is_not_cached() -> None:
    cache = PrefixCache(capacity_blocks=100, block_tokens=16)
    cache.insert(toks("a", 15))
    assert len(cache) == 0
    assert cache.lookup(toks("a", 15) + toks("b", 40)) == 0


def test_a_block_is_reused_only_behind_the_same_prefix() -> None:
    cache = PrefixCache(capacity_blocks=100, block_tokens=16)
    shared = toks("s", 16)
    cache.insert(toks("x", 16) + shared)
    assert cache.lookup(shared + toks("y", 20)) == 0  # same tokens, another position
    assert cache.lookup(toks("x", 16) + shared + toks("y", 1)) == 32


def test_partial_block_tail_is_not_cached() -> None:
    cache = PrefixCache(capacity_blocks=100, block_tokens=16)
    prompt = toks("a", 40)  # two full blocks and an 8-token tail
    cache.insert(prompt)
    assert len(cache) == 2
    assert cache.lookup(prompt + toks("b", 30)) == 32  # the shared tail tokens do not count


def test_lru_eviction_at_capacity() -> None:
    cache = PrefixCache(capacity_blocks=4, block_tokens=16)
    a, b, c = toks("a", 32), toks("b", 32), toks("c", 32)
    cache.insert(a)
    cache.insert(b)
    cache.insert(a)  # touch: b is now the least recently used
    cache.insert(c)
    assert len(cache) == 4
    assert cache.lookup(a + ["q"]) == 32
    assert cache.lookup(b + ["q"]) == 0
    assert cache.lookup(c + ["q"]) == 32


def test_eviction_takes_the_tail_of_a_chain_first() -> None:
    cache = PrefixCache(capacity_blocks=3, block_tokens=16)
    prompt = toks("a", 80)  # five blocks into three: the head survives
    cache.insert(prompt)
    assert len(cache) == 3
    assert cache.lookup(prompt) == 48


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        PrefixCache(capacity_blocks=0)


def test_tokenizer_is_prefix_stable_across_turns() -> None:
    turn1 = [{"role": "system", "content": "You are a sea captain."},
             {"role": "user", "content": "Hello there,  captain!"}]
    reply = "".join(filler(render_chat(turn1), 20))
    turn2 = [*turn1, {"role": "assistant", "content": reply},
             {"role": "user", "content": "Tell me more."}]
    first, second = tokenize(render_chat(turn1)), tokenize(render_chat(turn2))
    assert len(tokenize(reply)) == 20
    assert second[:len(first) + 20] == first + tokenize(reply)
    assert "".join(first) == render_chat(turn1)  # every character is in some token


async def run(replica: Replica, messages: list[dict[str, str]], max_tokens: int) -> tuple[int, str]:
    gen = replica.new(messages, max_tokens)
    async for _ in replica.generate(gen):
        pass
    return gen.cached_tokens, "".join(gen.output)


def instant(**kw: int) -> Replica:
    return Replica(PrefixCache(kw.pop("capacity", 1000)), prefill_ms_per_token=0,
                   decode_ms_per_token=0, **kw)


async def test_output_tokens_are_cached_for_the_next_turn() -> None:
    replica = instant()
    turn1 = [{"role": "system", "content": "You are a sea captain. " * 20},
             {"role": "user", "content": "What is the weather like at sea today?"}]
    cached, reply = await run(replica, turn1, max_tokens=37)
    assert cached == 0
    turn2 = [*turn1, {"role": "assistant", "content": reply},
             {"role": "user", "content": "And tomorrow?"}]
    cached, _ = await run(replica, turn2, max_tokens=5)
    done = len(tokenize(render_chat(turn1))) + 37  # prompt + output of turn 1
    assert cached == done // 16 * 16
    assert replica.generation_tokens_total == 42
    assert replica.requests_total == 2


async def test_batch_limit_queues_and_hands_the_slot_over() -> None:
    replica = instant(max_batch=1)
    first = replica.generate(replica.new([{"role": "user", "content": "one " * 40}], 8))
    await anext(first)  # prefilled, holding the only slot
    second = asyncio.create_task(run(replica, [{"role": "user", "content": "two"}], 4))
    await asyncio.sleep(0)
    assert (replica.running, len(replica.waiting)) == (1, 1)
    await first.aclose()  # a client that went away frees its slot, caches no output
    await second
    assert (replica.running, len(replica.waiting), replica.requests_total) == (0, 0, 1)
    assert replica.reserved_blocks == 0


async def test_http_round_trip() -> None:
    app = SimApp(instant(), model="sim", name="r1")
    messages = [{"role": "system", "content": "Persona. " * 30},
                {"role": "user", "content": "hi"}]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://sim") as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/v1/models")).json()["data"][0]["id"] == "sim"
        r = await client.post("/v1/chat/completions",
                              json={"model": "sim", "messages": messages, "max_tokens": 6})
        body = r.json()
        assert body["id"].startswith("chatcmpl-r1-")
        assert body["usage"]["completion_tokens"] == 6
        assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        stream = {"model": "sim", "messages": messages, "max_tokens": 20, "stream": True,
                  "stream_options": {"include_usage": True}}
        r = await client.post("/v1/chat/completions", json=stream)
        assert r.headers["content-type"] == "text/event-stream"
        events = [e.removeprefix("data: ") for e in r.text.split("\n\n") if e]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content", "")
                       for c in chunks if c["choices"])
        assert len(tokenize(text)) == 20
        usage = chunks[-1]["usage"]
        prompt = usage["prompt_tokens"]
        assert usage["prompt_tokens_details"]["cached_tokens"] == (prompt - 1) // 16 * 16
        metrics = (await client.get("/metrics")).text
        assert f'vllm:prefix_cache_queries_total{{engine="0",model_name="sim"}} {2.0 * prompt}' \
            in metrics
        for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc",
                     "prefix_cache_hits_total", "prompt_tokens_total", "generation_tokens_total"):
            assert f"vllm:{name}{{" in metrics
        assert (await client.post("/tokenize", json={"prompt": "a b"})).json()["count"] == 2
        assert (await client.post("/reset_prefix_cache")).status_code == 200
        assert len(app.replica.cache) == 0
        bad = await client.post("/v1/chat/completions", json={"messages": []})
        assert bad.status_code == 400 and "error" in bad.json()


async def test_a_client_that_disconnects_aborts_its_request() -> None:
    replica = Replica(PrefixCache(100), max_batch=1, prefill_ms_per_token=0,
                      decode_ms_per_token=60_000)  # it would decode for minutes
    app = SimApp(replica)
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                       "stream": True}).encode()
    gone = asyncio.Event()
    events = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def receive() -> dict[str, object]:
        event = next(events, None)
        if event is None:
            await gone.wait()
            return {"type": "http.disconnect"}
        return event

    first_token = asyncio.Event()

    async def send(message: dict[str, object]) -> None:
        body = message.get("body")
        if isinstance(body, bytes) and body.startswith(b"data: "):
            first_token.set()

    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}
    task = asyncio.create_task(app(scope, receive, send))
    await asyncio.wait_for(first_token.wait(), timeout=5)
    assert replica.running == 1
    gone.set()
    await asyncio.wait_for(task, timeout=5)
    assert (replica.running, replica.requests_total, replica.received_total) == (0, 0, 1)
