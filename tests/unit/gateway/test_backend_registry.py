"""The admin's backend changes persist across a restart and reach a second replica."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from gateway.backends.registry_stores import RedisRegistryStore, SqliteRegistryStore
from tests.unit.gateway.conftest import CHAT, FakeFleet, chat_reply, gateway_client, one_model

POLL = {"pool": {"registry_poll_s": 0.05}}


async def answers(client: httpx.AsyncClient, n: int = 4) -> set[str]:
    out = set()
    for _ in range(n):
        r = await client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200, r.text
        out.add(r.json()["choices"][0]["message"]["content"])
    return out


@pytest.fixture
def two(fleet: FakeFleet) -> tuple[str, str]:
    return (fleet.add("a:1", lambda req: httpx.Response(200, json=chat_reply("a"))),
            fleet.add("b:1", lambda req: httpx.Response(200, json=chat_reply("b"))))


async def test_changes_survive_a_restart(fleet: FakeFleet, tmp_path: Path,
                                         two: tuple[str, str]) -> None:
    a, b = two
    config = {**one_model(a), **POLL}
    async with gateway_client(fleet, config, tmp_path) as (client, _):
        r = await client.post("/admin/backends", json={
            "model": "m", "backend": {"url": b, "model": "up"}})
        assert r.status_code == 201
        assert (await client.post("/admin/backends/a:1/drain")).status_code == 200
        assert await answers(client) == {"b"}
    async with gateway_client(fleet, config, tmp_path) as (client, _):
        listing = (await client.get("/admin/backends")).json()
        assert listing["registry"]["store"] == "SqliteRegistryStore"
        assert listing["registry"]["applied"] == 2  # the add and the drain, replayed
        rows = {row["name"]: row for row in listing["data"]}
        assert rows["a:1"]["state"] == "drained" and rows["b:1"]["models"] == ["m"]
        assert await answers(client) == {"b"}
        assert (await client.delete("/admin/backends/a:1")).status_code == 200
        assert (await client.post("/admin/backends/b:1/drain")).status_code == 200
        assert (await client.post("/admin/backends/b:1/undrain")).status_code == 200
    async with gateway_client(fleet, config, tmp_path) as (client, _):
        names = [row["name"] for row in (await client.get("/admin/backends")).json()["data"]]
        assert names == ["b:1"]  # the config's a:1 stays removed
        assert await answers(client) == {"b"}


async def test_a_second_replica_on_the_same_store_follows(fleet: FakeFleet, tmp_path: Path,
                                                          two: tuple[str, str]) -> None:
    a, b = two
    config = {**one_model(a), **POLL}
    async with gateway_client(fleet, config, tmp_path) as (one, _), \
            gateway_client(fleet, config, tmp_path) as (other, _):
        await one.post("/admin/backends", json={"model": "m", "backend": {"url": b}})
        await one.post("/admin/backends/a:1/drain")
        await asyncio.sleep(0.3)
        assert await answers(other) == {"b"}
        await one.post("/admin/backends/a:1/undrain")
        await one.delete("/admin/backends/b:1")
        await asyncio.sleep(0.3)
        assert await answers(other) == {"a"}


async def test_bad_changes_are_4xx_and_write_nothing(fleet: FakeFleet, tmp_path: Path,
                                                     two: tuple[str, str]) -> None:
    a, _ = two
    async with gateway_client(fleet, {**one_model(a), **POLL}, tmp_path) as (client, app):
        registry = app.state.services.registry
        assert (await client.post("/admin/backends/nope/drain")).status_code == 404
        assert (await client.delete("/admin/backends/nope")).status_code == 404
        r = await client.post("/admin/backends", json={
            "model": "m", "backend": {"url": "http://other:2", "name": "a:1"}})
        assert r.status_code == 409
        r = await client.post("/admin/backends", json={"model": "m", "backend": {"url": a}})
        assert r.status_code == 409  # already serves m
        assert await registry.store.since(0) == (0, [])


@pytest.fixture(params=["sqlite", "redis"])
async def registry_store(request: pytest.FixtureRequest, tmp_path: Path
                         ) -> AsyncIterator[SqliteRegistryStore | RedisRegistryStore]:
    if request.param == "sqlite":
        store: SqliteRegistryStore | RedisRegistryStore = await SqliteRegistryStore(
            tmp_path / "r.db").open()
    else:
        client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0", decode_responses=True)
        store = await RedisRegistryStore(client, f"test-registry-{uuid.uuid4().hex[:8]}").open()
    try:
        yield store
    finally:
        if isinstance(store, RedisRegistryStore):
            await store.redis.delete(*store.keys)
        await store.close()


async def test_each_store_numbers_every_write(
        registry_store: SqliteRegistryStore | RedisRegistryStore) -> None:
    store = registry_store
    first = await store.put({"name": "x", "targets": [], "drained": True})
    assert await store.put({"name": "y", "targets": []}) == first + 1
    assert await store.put({"name": "x", "targets": [], "drained": False}) == first + 2
    newest, records = await store.since(first)
    assert newest == first + 2
    assert [(r["name"], r["seq"]) for r in records] == [("y", first + 1), ("x", first + 2)]
    assert records[1]["drained"] is False
    assert await store.since(first + 2) == (first + 2, [])


async def test_a_replica_sees_changes_made_after_redis_lost_its_data(
        fleet: FakeFleet, tmp_path: Path, two: tuple[str, str]) -> None:
    a, b = two
    prefix = f"test-wipe-{uuid.uuid4().hex[:8]}"
    config = {**one_model(a), "pool": {"registry_poll_s": 0.05, "registry_store": "redis",
                                       "registry_redis_url": "redis://127.0.0.1:6379/0"},
              "conversations": {"key_prefix": prefix}}
    redis = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        async with gateway_client(fleet, config, tmp_path / "one") as (one, app), \
                gateway_client(fleet, config, tmp_path / "two") as (other, _):
            await one.post("/admin/backends", json={"model": "m", "backend": {"url": b}})
            for _ in range(3):  # the other replica has applied a few numbers
                await one.post("/admin/backends/a:1/drain")
                await one.post("/admin/backends/a:1/undrain")
            await asyncio.sleep(0.3)
            assert await answers(other, 8) == {"a", "b"}
            # Redis restarted without persistence: every registry key is gone
            await redis.delete(*app.state.services.registry.store.keys)
            assert (await one.post("/admin/backends/b:1/drain")).status_code == 200
            await asyncio.sleep(0.3)
            assert await answers(other) == {"a"}  # before: never seen by the other
    finally:
        keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
