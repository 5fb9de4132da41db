"""No client can hurt another, on real parts: llama.cpp answering 500 to what it cannot
take, an oversized stream, Redis restarted under the gateway, a lock left by a crash."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from serving import LlamaCppServer
from tests.integration.conftest import GatewayProcess, RedisServer

pytestmark = pytest.mark.integration

GOOD = {"model": "smollm2", "max_tokens": 4,
        "messages": [{"role": "user", "content": "Say hi"}]}
# llama-cpp-python answers 500 (its pydantic validation) to an engine parameter of the
# wrong type, which the gateway passes on as the client sent it
BAD = {**GOOD, "top_k": "many"}


def config(servers: list[LlamaCppServer], workdir: Path, **extra: Any) -> dict[str, Any]:
    return {"local_backends": [], "server": {"data_dir": str(workdir / "data")},
            "knowledge": {"enabled": False},
            "pool": {"breaker": {"failure_threshold": 3, "reset_timeout_s": 30}},
            "models": [{"name": "smollm2", "backends": [
                {"url": s.url, "kind": "llamacpp", "model": "smollm2-upstream"}
                for s in servers]}], **extra}


KEYS = {"auth": {"keys": [{"key": "sk-ops", "role": "admin", "owner": "ops"},
                          {"key": "sk-careless", "owner": "careless"},
                          {"key": "sk-careful", "owner": "careful"}]}}
ADMIN, CARELESS, CAREFUL = ({"Authorization": f"Bearer sk-{k}"}
                            for k in ("ops", "careless", "careful"))


@pytest.fixture(scope="module")
def gateway(llama_pair: list[LlamaCppServer], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("isolation")
    gw = GatewayProcess(config(llama_pair, workdir, **KEYS), workdir).start()
    try:
        yield gw
    finally:
        gw.stop()


def test_one_keys_malformed_requests_leave_the_others_at_100_percent(
        gateway: GatewayProcess) -> None:
    with httpx.Client(base_url=gateway.url, timeout=120) as client:
        def send(job: tuple[dict[str, str], dict[str, Any]]) -> int:
            headers, body = job
            return client.post("/v1/chat/completions", json=body, headers=headers).status_code

        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(send, [(CARELESS, BAD), (CAREFUL, GOOD)] * 8))
        bad, good = statuses[0::2], statuses[1::2]
        assert set(bad) == {400}, bad
        assert set(good) == {200}, good
        backends = client.get("/admin/backends", headers=ADMIN).json()["data"]
        assert {b["state"] for b in backends} == {"healthy"}
        client.headers.update(CARELESS)
        error = client.post("/v1/chat/completions", json=BAD).json()["error"]
        assert "site-packages" not in error["message"] and ".py" not in error["message"]
        assert error["param"] == "top_k"
        # a grammar llama-cpp-python cannot parse kills its server: refused before it
        grammar = client.post("/v1/chat/completions", json={**GOOD, "grammar": "root ::= ((("})
        assert grammar.status_code == 400 and grammar.json()["error"]["param"] == "grammar"
        assert client.post("/v1/chat/completions", json=GOOD).status_code == 200


def test_an_oversized_stream_does_not_poison_the_next_request(gateway: GatewayProcess
                                                              ) -> None:
    huge = {**GOOD, "stream": True,
            "messages": [{"role": "user", "content": "lighthouse " * 100_000}]}
    with httpx.Client(base_url=gateway.url, timeout=300, headers=CAREFUL) as client:
        with client.stream("POST", "/v1/chat/completions", json=huge) as r:
            r.read()
        assert r.status_code in (400, 502)  # what llama.cpp made of a prompt past n_ctx
        for _ in range(4):  # every pooled connection: none may be the broken one
            assert client.post("/v1/chat/completions", json=GOOD).status_code == 200


def test_a_redis_restart_costs_no_request(llama_pair: list[LlamaCppServer],
                                          own_redis: RedisServer, tmp_path: Path) -> None:
    extra = {"conversations": {"store": "redis", "redis_url": own_redis.url}}
    gw = GatewayProcess(config(llama_pair, tmp_path, **extra), tmp_path).start()
    try:
        with httpx.Client(base_url=gw.url, timeout=60) as client:
            # several pooled connections, all made stale by the restart
            with ThreadPoolExecutor(4) as pool:
                made = list(pool.map(lambda _: client.post("/v1/conversations", json={}),
                                     range(8)))
            assert {r.status_code for r in made} == {200}
            own_redis.stop()
            started = time.monotonic()
            down = client.post("/v1/conversations", json={})
            assert down.status_code == 503, "Redis away: a 503, not a 500"
            assert time.monotonic() - started < 3, "one retry, not redis-py's ten"
            own_redis.start()
            after = [client.post("/v1/conversations", json={}).status_code for _ in range(8)]
            assert after == [200] * 8
    finally:
        gw.stop()


def test_a_lock_left_by_a_crashed_replica_frees_itself_soon(
        llama_pair: list[LlamaCppServer], own_redis: RedisServer, tmp_path: Path) -> None:
    extra = {"conversations": {"store": "redis", "redis_url": own_redis.url,
                               "lock_ttl_s": 2, "lock_wait_s": 30}}
    gw = GatewayProcess(config(llama_pair, tmp_path, **extra), tmp_path).start()
    try:
        with httpx.Client(base_url=gw.url, timeout=120) as client:
            conversation = client.post("/v1/conversations", json={}).json()["id"]
            # what a replica that died mid-turn leaves: its lock, with the TTL it had set
            redis.Redis(port=own_redis.port).set(f"ragate:lock:{conversation}", "dead",
                                                 px=2000)
            started = time.monotonic()
            turn = client.post("/v1/chat/completions",
                               json={**GOOD, "conversation_id": conversation})
            assert turn.status_code == 200
            assert time.monotonic() - started < 15, "waited for the TTL, not lock_wait_s"
    finally:
        gw.stop()
