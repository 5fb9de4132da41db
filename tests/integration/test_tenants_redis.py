"""Tenants across replicas: two gateway processes sharing a real Redis (our own, on a
free port) in front of the fast fake backend. Limits hold in total, budgets are never
exceeded by more than one request, and a key revoked on one replica is refused by the
other within auth.cache_ttl_s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import GatewayProcess, RedisServer

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": "Bearer sk-ops"}
CHAT = {"model": "fake", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
CACHE_TTL_S = 1.0


@pytest.fixture(scope="module")
def replicas(fake_backend: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[list[GatewayProcess]]:
    workdir: Path = tmp_path_factory.mktemp("replicas")
    redis_server = RedisServer(workdir).start()
    config: dict[str, Any] = {
        "local_backends": [], "knowledge": {"enabled": False},
        "conversations": {"store": "redis", "redis_url": redis_server.url},
        "auth": {"keys": [
            {"key": "sk-ops", "role": "admin", "owner": "ops"},
            {"key": "sk-fifty", "owner": "fifty", "limits": {"requests_per_minute": 50}},
            {"key": "sk-budget", "owner": "budget", "team": "red",
             "limits": {"tokens_per_day": 400}},
            {"key": "sk-other", "owner": "other"}],
            "store": "redis", "redis_url": redis_server.url, "cache_ttl_s": CACHE_TTL_S},
        "models": [{"name": "fake", "backends": [
            {"url": fake_backend, "kind": "vllm", "model": "fake-upstream"}]}],
    }
    gateways = []
    try:
        for n in range(2):
            sub = workdir / f"gw{n}"
            sub.mkdir()
            gateways.append(GatewayProcess({**config, "server": {"data_dir": str(sub)}},
                                           sub).start())
        yield gateways
    finally:
        for gateway in gateways:
            gateway.stop()
        redis_server.stop()


async def burst(urls: list[str], key: str, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=100)
    clients = [httpx.AsyncClient(base_url=u, timeout=60, limits=limits) for u in urls]
    try:
        return await asyncio.gather(*(
            clients[i % len(clients)].post("/v1/chat/completions", json=CHAT,
                                           headers={"Authorization": f"Bearer {key}"})
            for i in range(count)))
    finally:
        for client in clients:
            await client.aclose()


def test_200_concurrent_requests_over_two_replicas_let_exactly_50_through(
        replicas: list[GatewayProcess]) -> None:
    answers = asyncio.run(burst([g.url for g in replicas], "sk-fifty", 200))
    statuses = [r.status_code for r in answers]
    assert statuses.count(200) == 50 and statuses.count(429) == 150, statuses
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.headers["retry-after"] and refused.json()["error"]["code"] == (
        "rate_limit_exceeded")
    others = asyncio.run(burst([g.url for g in replicas], "sk-other", 20))
    assert {r.status_code for r in others} == {200}, "other keys are untouched"


def test_a_token_budget_shared_by_two_replicas_is_never_overspent(
        replicas: list[GatewayProcess]) -> None:
    answers = asyncio.run(burst([g.url for g in replicas], "sk-budget", 100))
    served = [r for r in answers if r.status_code == 200]
    assert served and len(served) < 100
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 429} <= {
        "insufficient_quota"}
    spent = sum(r.json()["usage"]["total_tokens"] for r in served)
    biggest = max(r.json()["usage"]["total_tokens"] for r in served)
    assert spent <= 400 + biggest, f"{spent} tokens spent of a 400 budget"
    with httpx.Client(base_url=replicas[0].url, timeout=30) as client:
        for _ in range(50):  # usage is written after each reply went out
            usage = client.get("/v1/usage", headers={"Authorization": "Bearer sk-budget"}).json()
            if usage["total"] and usage["total"]["requests"] >= len(answers):
                break
            time.sleep(0.1)
        total = usage["total"]
        assert total["requests"] == len(answers), "both replicas' usage in one place"
        assert total["errors"] == len(answers) - len(served), "the 429s count as errors"
        assert total["prompt_tokens"] + total["completion_tokens"] == spent


def test_a_key_revoked_on_one_replica_is_refused_by_the_other_within_the_ttl(
        replicas: list[GatewayProcess]) -> None:
    first, second = (httpx.Client(base_url=g.url, timeout=30) for g in replicas)
    with first, second:
        made = first.post("/admin/keys", headers=ADMIN, json={"owner": "temp"}).json()
        auth = {"Authorization": f"Bearer {made['secret']}"}
        assert second.post("/v1/chat/completions", json=CHAT, headers=auth).status_code == 200
        first.delete(f"/admin/keys/{made['id']}", headers=ADMIN)
        revoked_at = time.monotonic()
        assert first.post("/v1/chat/completions", json=CHAT, headers=auth).status_code == 401
        while second.post("/v1/chat/completions", json=CHAT, headers=auth).status_code == 200:
            assert time.monotonic() - revoked_at < CACHE_TTL_S + 0.5, "past the bound"
            time.sleep(0.05)
        assert second.post("/v1/chat/completions", json=CHAT, headers=auth).status_code == 401
