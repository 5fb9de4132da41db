"""Limits and usage through the API: 429 in OpenAI's shape with its headers, a budget's
cap sent to the engine, usage per key and per team."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.unit.gateway.conftest import CHAT, FakeFleet, chat_reply, one_model

KEYS = {"auth": {"keys": [
    {"key": "sk-admin", "role": "admin", "owner": "ops"},
    {"key": "sk-small", "owner": "small", "team": "red", "limits": {"requests_per_minute": 3}},
    {"key": "sk-budget", "owner": "budget", "team": "red", "limits": {"tokens_per_day": 60}},
    {"key": "sk-free", "owner": "free", "team": "blue"},
]}}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_over_the_request_limit_is_429_with_openais_headers(fleet: FakeFleet,
                                                                  make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))
    async with make_client({**one_model(url), **KEYS}) as (client, _):
        answers = [await client.post("/v1/chat/completions", json=CHAT,
                                     headers=bearer("sk-small")) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        first, refused = answers[0], answers[3]
        assert first.headers["x-ratelimit-limit-requests"] == "3"
        assert first.headers["x-ratelimit-remaining-requests"] == "2"
        assert first.headers["x-ratelimit-reset-requests"].endswith("s")
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        error = refused.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        assert len(fleet.chat_calls()) == 3, "a refused request reaches no backend"
        free = await client.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-free"))
        assert free.status_code == 200 and "x-ratelimit-limit-requests" not in free.headers


async def test_a_budget_caps_the_reply_and_then_refuses(fleet: FakeFleet, make_client) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        return httpx.Response(200, json=chat_reply(
            "word " * 5, prompt=10, completion=min(sent["max_tokens"], 25)))

    url = fleet.add("b1:8000", reply)
    async with make_client({**one_model(url), **KEYS}) as (client, app):
        first = await client.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-budget"))
        assert first.status_code == 200
        sent = fleet.calls[-1][2]
        assert 0 < sent["max_tokens"] < 60, "the engine is asked for no more than is left"
        for _ in range(5):
            last = await client.post("/v1/chat/completions", json=CHAT,
                                     headers=bearer("sk-budget"))
            await asyncio.sleep(0.01)  # settling runs after the reply went out
            if last.status_code == 429:
                break
        assert last.status_code == 429 and last.json()["error"]["code"] == "insufficient_quota"


async def wait_for_usage(client: httpx.AsyncClient, key: str, requests: int) -> dict[str, Any]:
    for _ in range(100):
        usage = (await client.get("/v1/usage", headers=bearer(key))).json()
        if usage["total"] and usage["total"]["requests"] >= requests:
            return usage
        await asyncio.sleep(0.02)
    raise AssertionError(f"usage never showed {requests} requests: {usage}")


async def test_usage_per_key_and_per_team(fleet: FakeFleet, make_client) -> None:
    url = fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply(
        prompt=7, completion=3)))
    async with make_client({**one_model(url), **KEYS}) as (client, _):
        for _ in range(2):
            await client.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-small"))
        await client.post("/v1/chat/completions", json=CHAT, headers=bearer("sk-free"))
        await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"},
                          headers=bearer("sk-free"))
        mine = await wait_for_usage(client, "sk-small", 2)
        assert mine["owner"] == "small" and mine["team"] == "red"
        assert (mine["total"]["prompt_tokens"], mine["total"]["completion_tokens"]) == (14, 6)
        assert mine["by_model"][0]["model"] == "m"
        await wait_for_usage(client, "sk-free", 1)
        teams = (await client.get("/admin/usage?group_by=team",
                                  headers=bearer("sk-admin"))).json()["data"]
        by_team = {t["team"]: t for t in teams}
        assert by_team["red"]["requests"] == 2 and by_team["blue"]["prompt_tokens"] == 7
        assert (await client.get("/admin/usage", headers=bearer("sk-free"))).status_code == 403
        metrics = (await client.get("/metrics")).text
        assert 'ragate_tenant_tokens_total{direction="in",model="m",team="red"} 14.0' in metrics
        assert "sk-small" not in metrics and "key:" not in metrics, "no per-key labels"
