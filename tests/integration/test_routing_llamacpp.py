"""Sticky routing over two real llama.cpp servers: a conversation stays on one backend
under ``session`` and ``cache_aware``, and moves when that backend dies."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import GatewayProcess, start_llama_servers

pytestmark = pytest.mark.integration


def turn(client: httpx.Client, gw: GatewayProcess, cid: str, n: int) -> str:
    r = client.post(gw.url + "/v1/chat/completions", json={
        "model": "smollm2", "conversation_id": cid, "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "user", "content": f"Question {n}: say a word."}]})
    assert r.status_code == 200, r.text
    return r.headers["x-ragate-backend"]


@pytest.mark.parametrize("policy", ["session", "cache_aware"])
def test_conversation_sticks_and_moves_when_its_backend_dies(policy: str,
                                                             tmp_path: Path) -> None:
    servers = start_llama_servers(2)
    by_name = {s.url.removeprefix("http://"): s for s in servers}
    config = {
        "local_backends": [], "server": {"data_dir": str(tmp_path / "data")},
        "pool": {"health_interval_s": 0.5, "retry_backoff_s": 0.01},
        "models": [{"name": "smollm2", "policy": policy, "context_window": 2048,
                    "backends": [{"url": s.url, "kind": "llamacpp", "model": "smollm2"}
                                 for s in servers]}],
    }
    gw = GatewayProcess(config, tmp_path).start()
    try:
        with httpx.Client(timeout=120) as client:
            conversations = [client.post(gw.url + "/v1/conversations", json={}).json()["id"]
                             for _ in range(6)]
            homes = {}
            for cid in conversations:
                served = {turn(client, gw, cid, n) for n in range(4)}
                assert len(served) == 1, f"{policy}: conversation {cid} moved: {served}"
                homes[cid] = served.pop()
            victim_cid = conversations[0]
            victim = homes[victim_cid]
            by_name[victim].kill()
            after = [turn(client, gw, victim_cid, n) for n in range(4, 8)]
            assert set(after) == {next(n for n in by_name if n != victim)}
            for cid in conversations[1:]:  # the survivors' conversations did not move
                if homes[cid] != victim:
                    assert turn(client, gw, cid, 9) == homes[cid]
    finally:
        gw.stop()
        for server in servers:
            server.stop()
