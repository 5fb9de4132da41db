"""API keys and roles, admin routes, health, readiness and metrics."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.app import check_exposure
from gateway.errors import ConfigError
from gateway.settings import load_settings
from tests.unit.gateway.conftest import CHAT, FakeFleet, chat_reply, one_model

KEYS = {"auth": {"keys": [{"key": "sk-chat", "role": "chat", "owner": "alice"},
                          {"key": "sk-admin", "role": "admin", "owner": "ops"}]}}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def ok_backend(fleet: FakeFleet) -> str:
    return fleet.add("b1:8000", lambda req: httpx.Response(200, json=chat_reply()))


@pytest.mark.parametrize("headers, code", [
    ({}, "missing_api_key"),
    (bearer("sk-wrong"), "invalid_api_key"),
    ({"Authorization": "Basic abc"}, "invalid_api_key"),
])
async def test_bad_or_missing_key_is_401(make_client, ok_backend: str, headers: dict[str, str],
                                         code: str) -> None:
    async with make_client({**one_model(ok_backend), **KEYS}) as (client, _):
        r = await client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    assert r.json()["error"]["code"] == code


async def test_chat_key_may_chat_but_not_administer(make_client, ok_backend: str) -> None:
    async with make_client({**one_model(ok_backend), **KEYS}) as (client, _):
        assert (await client.post("/v1/chat/completions", json=CHAT,
                                  headers=bearer("sk-chat"))).status_code == 200
        r = await client.get("/admin/backends", headers=bearer("sk-chat"))
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        assert (await client.get("/admin/backends", headers=bearer("sk-admin"))).status_code == 200
        assert (await client.get("/v1/models", headers=bearer("sk-admin"))).status_code == 200


async def test_health_and_metrics_need_no_key(make_client, ok_backend: str) -> None:
    async with make_client({**one_model(ok_backend), **KEYS}) as (client, _):
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200


def test_open_gateway_on_public_interface_refuses_to_start() -> None:
    settings = load_settings(server={"host": "0.0.0.0"}, local_backends=[])
    with pytest.raises(ConfigError, match="no API keys are configured"):
        check_exposure(settings)


def test_open_gateway_on_loopback_says_so(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(server={"host": "127.0.0.1"}, local_backends=[])
    with caplog.at_level("WARNING"):
        check_exposure(settings)
    assert "auth disabled" in caplog.text


def test_keys_allow_a_public_bind() -> None:
    check_exposure(load_settings(server={"host": "0.0.0.0"}, local_backends=[], **KEYS))


async def test_admin_lists_backends_with_health_and_in_flight(make_client,
                                                              ok_backend: str) -> None:
    async with make_client(one_model(ok_backend, "http://down:9")) as (client, _):
        r = await client.get("/admin/backends")
    rows = {b["name"]: b for b in r.json()["data"]}
    assert rows["b1:8000"]["state"] == "healthy" and rows["b1:8000"]["in_flight"] == 0
    assert rows["b1:8000"]["models"] == ["m"]
    assert rows["down:9"]["healthy"] is False and "ConnectError" in rows["down:9"]["last_error"]


async def test_add_drain_and_remove_a_backend_at_run_time(fleet: FakeFleet,
                                                          make_client) -> None:
    a = fleet.add("a:1", lambda req: httpx.Response(200, json=chat_reply("a")))
    b = fleet.add("b:1", lambda req: httpx.Response(200, json=chat_reply("b")))

    async def answers(client: httpx.AsyncClient, n: int = 4) -> set[str]:
        out = set()
        for _ in range(n):
            r = await client.post("/v1/chat/completions", json=CHAT)
            out.add(r.json()["choices"][0]["message"]["content"])
        return out

    async with make_client(one_model(a)) as (client, _):
        assert await answers(client) == {"a"}
        r = await client.post("/admin/backends", json={"model": "m",
                                                      "backend": {"url": b, "model": "up"}})
        assert r.status_code == 201 and r.json()["state"] == "healthy"
        assert await answers(client) == {"a", "b"}
        assert (await client.post("/admin/backends/a:1/drain")).json()["state"] == "drained"
        assert await answers(client) == {"b"}
        assert (await client.post("/admin/backends/a:1/undrain")).json()["state"] == "healthy"
        assert await answers(client) == {"a", "b"}
        assert (await client.delete("/admin/backends/b:1")).json()["removed"] is True
        assert await answers(client) == {"a"}
        assert [x["name"] for x in (await client.get("/admin/backends")).json()["data"]] == ["a:1"]
        r = await client.delete("/admin/backends/b:1")
        assert r.status_code == 404 and r.json()["error"]["code"] == "backend_not_found"
        r = await client.post("/admin/backends", json={"model": "m",
                                                      "backend": {"url": a, "model": "up"}})
        assert r.status_code == 409
        r = await client.post("/admin/backends", json={"model": "m", "backend": {}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "backend.url"


async def test_draining_lets_in_flight_requests_finish(fleet: FakeFleet, make_client) -> None:
    release = asyncio.Event()

    async def slow(req: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json=chat_reply("slow"))

    a = fleet.add("a:1", slow)
    async with make_client(one_model(a)) as (client, app):
        pending = asyncio.create_task(client.post("/v1/chat/completions", json=CHAT))
        await asyncio.sleep(0.05)
        drained = (await client.post("/admin/backends/a:1/drain")).json()
        assert drained["state"] == "draining" and drained["in_flight"] == 1
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 503, "a drained group takes no new requests"
        release.set()
        assert (await pending).status_code == 200
        assert app.state.services.pool.backends["a:1"].state() == "drained"


async def test_ready_needs_a_healthy_backend_per_model(fleet: FakeFleet, make_client) -> None:
    a = fleet.add("a:1", lambda req: httpx.Response(200, json=chat_reply()))
    config = {"models": [{"name": "up", "backends": [{"url": a}]},
                         {"name": "down", "backends": [{"url": "http://gone:1"}]}]}
    async with make_client(config) as (client, _):
        r = await client.get("/ready")
    assert r.status_code == 503
    assert r.json()["models"] == {"up": True, "down": False}


async def test_metrics_count_requests_latency_and_backend_state(make_client,
                                                                ok_backend: str) -> None:
    async with make_client(one_model(ok_backend)) as (client, _):
        await client.post("/v1/chat/completions", json=CHAT)
        await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
        text = (await client.get("/metrics")).text
    assert ('ragate_requests_total{backend="b1:8000",model="m",route="/v1/chat/completions",'
            'status="200"} 1.0') in text
    assert ('ragate_requests_total{backend="",model="",route="/v1/chat/completions",'
            'status="404"} 1.0') in text
    assert ('ragate_request_duration_seconds_count{model="m",route="/v1/chat/completions"} 1.0'
            in text)
    assert 'ragate_time_to_first_token_seconds_count{backend="b1:8000",model="m"} 1.0' in text
    assert 'ragate_tokens_total{direction="out",model="m",source="reported"} 2.0' in text
    assert 'ragate_backend_healthy{backend="b1:8000"} 1.0' in text
    assert 'ragate_backend_in_flight{backend="b1:8000"} 0.0' in text


async def test_unknown_route_and_method_use_openai_errors(make_client, ok_backend: str) -> None:
    async with make_client(one_model(ok_backend)) as (client, _):
        r = await client.get("/v1/nothing")
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
        r = await client.get("/v1/chat/completions")
        assert r.status_code == 405 and set(r.json()["error"]) == {"message", "type", "param",
                                                                   "code"}


async def test_access_log_has_one_structured_line(make_client, ok_backend: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    import json
    async with make_client(one_model(ok_backend)) as (client, _):
        with caplog.at_level("INFO", logger="ragate.access"):
            r = await client.post("/v1/chat/completions", json=CHAT)
    lines = [json.loads(rec.message) for rec in caplog.records if rec.name == "ragate.access"]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == r.headers["x-request-id"]
    assert line["status"] == 200 and line["model"] == "m" and line["backend"] == "b1:8000"
    assert line["prompt_tokens"] == 5 and line["completion_tokens"] == 2
