"""Routing hints shared through the real Redis: two replicas agree on a session's backend."""

from __future__ import annotations

import secrets

import pytest

from gateway.session_hints import LocalSessionHints, RedisSessionHints

pytestmark = pytest.mark.integration


async def test_two_replicas_share_hints_and_they_expire() -> None:
    prefix = f"ragate-test-{secrets.token_hex(4)}"
    a = RedisSessionHints.from_url("redis://127.0.0.1:6379/0", prefix, ttl_s=1)
    b = RedisSessionHints.from_url("redis://127.0.0.1:6379/0", prefix, ttl_s=1)
    try:
        assert await b.get("m", "conv_1") is None
        await a.set("m", "conv_1", "gpu-2")
        assert await b.get("m", "conv_1") == "gpu-2"
        assert await b.get("other-model", "conv_1") is None
        keys = [k async for k in a.redis.scan_iter(f"{prefix}:*")]
        assert keys and 0 < await a.redis.ttl(keys[0]) <= 1
    finally:
        await a.redis.delete(*[k async for k in a.redis.scan_iter(f"{prefix}:*")] or ["x"])
        await a.close()
        await b.close()


async def test_redis_gone_costs_only_the_hint() -> None:
    hints = RedisSessionHints.from_url("redis://127.0.0.1:1/0", "ragate")
    try:
        await hints.set("m", "c", "b1")  # logged, not raised
        assert await hints.get("m", "c") is None
    finally:
        await hints.close()


async def test_local_hints_are_bounded() -> None:
    hints = LocalSessionHints(capacity=2)
    for i in range(3):
        await hints.set("m", f"c{i}", "b")
    assert await hints.get("m", "c0") is None and await hints.get("m", "c2") == "b"
