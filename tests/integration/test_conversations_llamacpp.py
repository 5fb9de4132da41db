"""Conversations over a real llama.cpp backend, driven by the official openai SDK."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from serving import LlamaCppServer
from tests.integration.conftest import GatewayProcess

pytestmark = pytest.mark.integration


def config_for(server: LlamaCppServer, data_dir: Path, **conversations: Any) -> dict[str, Any]:
    return {
        "local_backends": [],
        "server": {"data_dir": str(data_dir)},
        "conversations": conversations,
        "pool": {"health_interval_s": 1},
        "models": [{
            "name": "smollm2", "context_window": 2048, "system_prompt": "You are terse.",
            "truncation": {"strategy": "stepped", "reserve_completion_tokens": 64},
            "backends": [{"url": server.url, "kind": "llamacpp", "model": "smollm2-upstream"}],
        }],
    }


def sdk(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def create(gw: GatewayProcess) -> str:
    r = httpx.post(gw.url + "/v1/conversations", json={"metadata": {"persona": "a sailor"}})
    r.raise_for_status()
    return str(r.json()["id"])


def export(gw: GatewayProcess, cid: str) -> dict[str, Any]:
    r = httpx.get(f"{gw.url}/v1/conversations/{cid}/export")
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def send(gw: GatewayProcess, cid: str, text: str, stream: bool = False) -> str:
    kwargs: dict[str, Any] = dict(model="smollm2", max_tokens=8, temperature=0,
                                  messages=[{"role": "user", "content": text}],
                                  extra_body={"conversation_id": cid})
    with sdk(gw) as client:
        if not stream:
            return client.chat.completions.create(**kwargs).choices[0].message.content or ""
        chunks = client.chat.completions.create(stream=True, **kwargs)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_thirty_turns_with_a_restart_in_the_middle(llama_pair: list[LlamaCppServer],
                                                   tmp_path: Path) -> None:
    config = config_for(llama_pair[0], tmp_path / "data")
    gw = GatewayProcess(config, tmp_path).start()
    said: list[tuple[str, str]] = []
    try:
        cid = create(gw)
        for n in range(30):
            if n == 15:  # a gateway restart in the middle of the conversation
                gw.stop()
                gw.start()
            question = f"Turn {n}: name a fish."
            answer = send(gw, cid, question, stream=n % 2 == 1)
            said += [("user", question), ("assistant", answer)]
        exported = export(gw, cid)
        metrics = gw.metrics()
    finally:
        gw.stop()
    assert [(i["role"], i["content"]) for i in exported["items"]] == said
    assert exported["turns"] == 30
    assert "ragate_predicted_prefix_reuse_tokens_total" in metrics


def test_two_concurrent_sends_do_not_interleave(llama_pair: list[LlamaCppServer],
                                                tmp_path: Path) -> None:
    gw = GatewayProcess(config_for(llama_pair[1], tmp_path / "data"), tmp_path).start()
    try:
        cid = create(gw)
        errors: list[BaseException] = []

        def worker(text: str) -> None:
            try:
                send(gw, cid, text, stream=text.endswith("B"))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(f"message {x}",)) for x in "AB"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors
        items = export(gw, cid)["items"]
    finally:
        gw.stop()
    assert [i["role"] for i in items] == ["user", "assistant", "user", "assistant"]
    assert {items[0]["content"], items[2]["content"]} == {"message A", "message B"}
    assert [i["turn"] for i in items] == [0, 0, 1, 1]
