"""The chat pipeline against real llama.cpp servers, driven by the official openai SDK:
stateless truncation with a byte-identical prefix, passages inside the window, usage on a
stream that llama.cpp sends none for, an interrupted turn, a tool turn that goes on."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from serving import LlamaCppServer
from tests.integration.conftest import GatewayProcess, start_llama_servers

pytestmark = pytest.mark.integration

HIT = re.compile(rb"Llama\.generate: (\d+) prefix-match hit, remaining (\d+) prompt tokens")
WORDS = ("harbour lantern compass island tide anchor captain treasure voyage chart north "
         "trade spice silk barrel cannon biscuit parrot letter customs dock reef fog").split()


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaCppServer]:
    server = start_llama_servers(1)[0]
    try:
        yield server
    finally:
        server.stop()


def model(server: LlamaCppServer, **extra: Any) -> dict[str, Any]:
    return {"name": "smollm2", "context_window": 2048,
            "truncation": {"reserve_completion_tokens": 64},
            "backends": [{"url": server.url, "kind": "llamacpp", "model": "smollm2-upstream"}],
            **extra}


@pytest.fixture
def gateway_for(gateway_factory: Any, tmp_path: Path) -> Any:
    """A gateway process in front of ``server``, stopped after the test."""
    def start(server: LlamaCppServer, **config: Any) -> GatewayProcess:
        full = {"local_backends": [], "server": {"data_dir": str(tmp_path / "data")},
                "pool": {"health_interval_s": 1}, "knowledge": {"enabled": False},
                "models": [model(server)], **config}
        return gateway_factory(full)  # type: ignore[no-any-return]
    return start


def sdk(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=180)


def sentence(n: int, words: int = 45) -> str:
    return f"Turn {n}: " + " ".join(WORDS[(n * 7 + i) % len(WORDS)] for i in range(words))


def history_of(turns: int) -> list[dict[str, str]]:
    """A stateless chat of ``turns`` turns, ~60 tokens a message, as a frontend resends it."""
    messages = [{"role": "system", "content": "You are a terse harbour master."}]
    for n in range(turns):
        messages += [{"role": "user", "content": sentence(n) + "?"},
                     {"role": "assistant", "content": "Noted. " + sentence(n + 100)}]
    return messages


def hits_since(server: LlamaCppServer, offset: int) -> list[tuple[int, int]]:
    assert server.log_path is not None
    time.sleep(0.1)  # let the server flush its log line
    with server.log_path.open("rb") as f:
        f.seek(offset)
        return [(int(a), int(b)) for a, b in HIT.findall(f.read())]


def test_a_sixty_turn_stateless_chat_is_answered_and_the_next_turn_reuses_the_prefix(
        llama: LlamaCppServer, gateway_for: Any) -> None:
    gw = gateway_for(llama)
    messages = [*history_of(60), {"role": "user", "content": "And the tide tonight?"}]
    with sdk(gw) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2", messages=messages, max_tokens=8, temperature=0)
        first = raw.parse()
        assert first.choices[0].message.content is not None
        assert int(raw.headers["x-ragate-dropped-messages"]) > 0, "the history was cut"
        first_prompt = first.usage.prompt_tokens
        assert first_prompt < 2048 - 64
        offset = llama.log_path.stat().st_size if llama.log_path else 0
        follow = [*messages, {"role": "assistant", "content": first.choices[0].message.content},
                  {"role": "user", "content": "And tomorrow morning?"}]
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2", messages=follow, max_tokens=8, temperature=0)
        second = raw.parse()
    reused, total = map(int, raw.headers["x-ragate-prefix-reuse"].split("/"))
    assert reused > 0.8 * total, "the gateway predicts the prefix is reused"
    cached, remaining = hits_since(llama, offset)[-1]
    # the backend itself served the whole previous prompt from its cache: the prefix it
    # received was byte-identical (the previous reply is re-tokenized, so allow its length)
    assert cached >= first_prompt - 2, (cached, first_prompt)
    assert cached + remaining == second.usage.prompt_tokens


def test_a_stream_with_include_usage_ends_with_a_usage_chunk(llama: LlamaCppServer,
                                                              gateway_for: Any) -> None:
    gw = gateway_for(llama)
    with sdk(gw) as client:
        chunks = list(client.chat.completions.create(
            model="smollm2", stream=True, max_tokens=6, temperature=0,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Name a port."}]))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens > 0 and last.usage.prompt_tokens > 5
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    gw.stop()
    log = gw.log()
    assert '"usage_source":"counted"' in log and '"prompt_tokens":null' not in log


def test_a_long_stored_conversation_with_passages_in_system_mode_stays_in_the_window(
        llama: LlamaCppServer, gateway_for: Any) -> None:
    gw = gateway_for(llama, knowledge={"enabled": True},
                     models=[model(llama, knowledge={
                         "knowledge_base": "harbour", "mode": "system",
                         "max_context_chars": 900, "max_context_tokens": 300})])
    with httpx.Client(base_url=gw.url, timeout=120) as client:
        assert client.post("/v1/knowledge_bases", json={"name": "harbour"}).status_code == 201
        text = "\n\n".join(f"Rule {n}. Ships at berth {n} must {sentence(n, 60)}."
                           for n in range(40))
        r = client.post("/v1/knowledge_bases/harbour/documents",
                        files=[("files", ("rules.txt", text.encode(), "text/plain"))])
        job_id = r.json()["job_id"]
        for _ in range(600):
            job = client.get(f"/v1/knowledge_bases/jobs/{job_id}").json()
            if job["status"] in ("done", "failed"):
                break
            time.sleep(0.2)
        assert job["status"] == "done", job
        cid = client.post("/v1/conversations", json={}).json()["id"]
    prompts = []
    with sdk(gw) as sdk_client:
        for n in range(12):
            question = f"What about berth {n}? " + sentence(n, 110)
            raw = sdk_client.chat.completions.with_raw_response.create(
                model="smollm2", max_tokens=4, temperature=0,
                messages=[{"role": "user", "content": question}],
                extra_body={"conversation_id": cid})
            reply = raw.parse()
            assert reply.model_extra["ragate"]["sources"], "passages were injected"
            prompts.append(reply.usage.prompt_tokens)
    assert max(prompts) <= 2048 - 64, prompts
    assert int(raw.headers["x-ragate-dropped-messages"]) > 0, "the window filled and was cut"


def test_a_backend_killed_mid_stream_leaves_an_interrupted_turn(gateway_for: Any) -> None:
    server = start_llama_servers(1)[0]
    try:
        gw = gateway_for(server)
        cid = httpx.post(gw.url + "/v1/conversations", json={}).json()["id"]
        received: list[str] = []
        with sdk(gw) as client:
            stream = client.chat.completions.create(
                model="smollm2", stream=True, max_tokens=400, temperature=0,
                messages=[{"role": "user", "content": "Tell a long story about a harbour."}],
                extra_body={"conversation_id": cid})
            killer = None
            with pytest.raises(openai.APIError):
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        received.append(chunk.choices[0].delta.content)
                    if len(received) == 3 and killer is None:
                        killer = threading.Thread(target=server.kill)
                        killer.start()
            assert killer is not None
            killer.join()
        items = httpx.get(f"{gw.url}/v1/conversations/{cid}/items").json()["data"]
        assert [(i["role"], i["status"]) for i in items] == [
            ("user", "interrupted"), ("assistant", "interrupted")]
        assert items[1]["content"].startswith("".join(received[:3]))
    finally:
        server.stop()


def test_a_conversation_with_a_tool_call_turn_goes_on(llama: LlamaCppServer,
                                                      gateway_for: Any) -> None:
    gw = gateway_for(llama)
    call = {"id": "call_1", "type": "function",
            "function": {"name": "tide_table", "arguments": "{\"port\": \"Oslo\"}"}}
    r = httpx.post(gw.url + "/v1/conversations", json={"items": [
        {"role": "user", "content": "When is high tide in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "High tide at 14:05."},
        {"role": "assistant", "content": "High tide is at 14:05."}]})
    cid = r.json()["id"]
    with sdk(gw) as client:
        for question in ("And low tide?", "Thanks."):
            reply = client.chat.completions.create(
                model="smollm2", max_tokens=6, temperature=0,
                messages=[{"role": "user", "content": question}],
                extra_body={"conversation_id": cid})
            assert reply.choices[0].message.content is not None
    items = httpx.get(f"{gw.url}/v1/conversations/{cid}/items?limit=100").json()["data"]
    assert len(items) == 8 and {i["status"] for i in items} == {"completed"}
