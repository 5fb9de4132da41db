"""Rate limits and budgets, one suite for the in-process limiter and the Redis one (real
Redis; two clients stand for two replicas)."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.errors import RateLimitError
from gateway.settings import Limits
from gateway.tenants.limits import (
    LocalRateLimiter,
    RateLimiter,
    Scope,
    Scopes,
    duration,
    scopes_key,
)
from gateway.tenants.redis_limits import RedisRateLimiter

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["local", "redis"])
async def replicas(request: pytest.FixtureRequest) -> AsyncIterator[list[RateLimiter]]:
    """Two limiters sharing their counts (one process: the same object twice)."""
    if request.param == "local":
        local = LocalRateLimiter(default_cap=500)
        yield [local, local]
        return
    prefix = f"test-rl-{secrets.token_hex(4)}"
    made = [RedisRateLimiter.from_url(REDIS, prefix=prefix, default_cap=500) for _ in range(2)]
    try:
        await made[0].redis.ping()
    except Exception:  # noqa: BLE001
        pytest.skip("no Redis at 127.0.0.1:6379")
    try:
        yield list(made)
    finally:
        keys = [k async for k in made[0].redis.scan_iter(f"{prefix}:*")]
        if keys:
            await made[0].redis.delete(*keys)
        for limiter in made:
            await limiter.close()


async def outcome(limiter: RateLimiter, scopes: list[Scope], prompt: int = 10,
                  wanted: int | None = None) -> Any:
    try:
        return await limiter.admit(scopes, prompt, wanted)
    except RateLimitError as exc:
        return exc


async def test_200_concurrent_requests_against_50_a_minute_let_exactly_50_through(
        replicas: list[RateLimiter]) -> None:
    scopes = [Scope("key:a", Limits(requests_per_minute=50))]
    results = await asyncio.gather(*(outcome(replicas[i % 2], scopes) for i in range(200)))
    refused = [r for r in results if isinstance(r, RateLimitError)]
    assert len(results) - len(refused) == 50
    error = refused[0]
    assert error.status_code == 429 and error.code == "rate_limit_exceeded"
    assert 1 <= int(error.headers["retry-after"]) <= 60
    other = await outcome(replicas[0], [Scope("key:b", Limits(requests_per_minute=50))])
    assert not isinstance(other, RateLimitError), "another key is not touched"


async def test_concurrency_is_leased_and_released(replicas: list[RateLimiter]) -> None:
    scopes = [Scope("key:a", Limits(max_concurrent=2))]
    first, second = await replicas[0].admit(scopes, 1, 5), await replicas[1].admit(scopes, 1, 5)
    assert isinstance(await outcome(replicas[0], scopes), RateLimitError)
    await replicas[1].settle(first, 3)
    await replicas[1].flush()  # Redis settles in batches, within 50 ms
    third = await replicas[0].admit(scopes, 1, 5)
    await replicas[0].settle(second, 3)
    await replicas[0].settle(third, 3)


async def test_a_budget_caps_the_reply_to_what_is_left_and_is_never_exceeded(
        replicas: list[RateLimiter]) -> None:
    scopes = [Scope("key:a", Limits(tokens_per_day=1000))]
    first = await replicas[0].admit(scopes, 100, None)
    assert (first.cap, first.reserved) == (500, 600), "the default cap when none was asked"
    second = await replicas[1].admit(scopes, 100, 900)
    assert second.cap == 300, "only what the first request's reservation left"
    refused = await outcome(replicas[0], scopes, prompt=100)
    assert isinstance(refused, RateLimitError) and refused.code == "insufficient_quota"
    await replicas[0].settle(first, 150)  # it used less than it reserved
    await replicas[0].flush()
    third = await replicas[1].admit(scopes, 100, 900)
    assert third.cap == 1000 - 150 - 400 - 100


async def test_concurrent_spending_stays_within_the_budget(replicas: list[RateLimiter]
                                                           ) -> None:
    budget = 5000
    scopes = [Scope("key:a", Limits(tokens_per_month=budget)),
              Scope("team:red", Limits(tokens_per_minute=budget * 2))]
    rng = random.Random(7)
    spent = 0

    async def one(i: int) -> None:
        nonlocal spent
        prompt = rng.randint(20, 200)
        admission = await outcome(replicas[i % 2], scopes, prompt, rng.choice([None, 300]))
        if isinstance(admission, RateLimitError):
            return
        await asyncio.sleep(rng.random() / 100)
        used = prompt + rng.randint(0, admission.cap)  # the gateway stops a reply at its cap
        spent += used
        await replicas[i % 2].settle(admission, used)
        await replicas[i % 2].flush()

    await asyncio.gather(*(one(i) for i in range(120)))
    assert budget * 0.5 < spent <= budget


async def test_openais_rate_limit_headers() -> None:
    limiter = LocalRateLimiter()
    scopes = [Scope("key:a", Limits(requests_per_minute=10, tokens_per_minute=1000))]
    admission = await limiter.admit(scopes, 50, 100)
    assert admission.headers["x-ratelimit-limit-requests"] == "10"
    assert admission.headers["x-ratelimit-remaining-requests"] == "9"
    assert admission.headers["x-ratelimit-limit-tokens"] == "1000"
    assert admission.headers["x-ratelimit-remaining-tokens"] == "850"
    assert admission.headers["x-ratelimit-reset-requests"].endswith("s")
    assert (duration(0.02), duration(1), duration(360)) == ("20ms", "1s", "6m0s")


async def counted_limiter(prefix: str) -> tuple[RedisRateLimiter, list[int]]:
    """A Redis limiter whose calls to Redis are counted (in the list's one item)."""
    limiter = RedisRateLimiter.from_url(REDIS, prefix=prefix, default_cap=100)
    try:
        await limiter.redis.ping()
    except Exception:  # noqa: BLE001
        pytest.skip("no Redis at 127.0.0.1:6379")
    calls = [0]
    real = limiter._call

    async def counted(entries: Any) -> Any:
        calls[0] += 1
        return await real(entries)

    limiter._call = counted  # type: ignore[method-assign]
    return limiter, calls


async def test_far_from_its_limits_a_replica_admits_from_a_share_and_gives_back_the_rest(
        ) -> None:
    prefix = f"test-rl-{secrets.token_hex(4)}"
    limiter, calls = await counted_limiter(prefix)
    scopes = [Scope("key:big", Limits(requests_per_minute=100_000, max_concurrent=10_000,
                                      tokens_per_day=10**9))]
    try:
        admissions = [await limiter.admit(scopes, 10, 20) for _ in range(20)]
        assert calls[0] == 1, "one Redis call, then admissions from the share"
        assert all(a.cap == 20 for a in admissions)
        for admission in admissions[:-1]:
            await limiter.settle(admission, 25)
        await limiter.flush()  # the first request was admitted (and settles) in Redis
        redis = limiter.redis
        leases = f"{prefix}:rl:key:big:lease"
        assert await redis.zcard(leases) == 32, "the share's leases are held in Redis"
        await asyncio.sleep(1.3)  # the share expires: what it did not use goes back,
        day = [k async for k in redis.scan_iter(f"{prefix}:rl:key:big:tok:day:*")][0]
        assert int(await redis.get(day)) == 19 * 25 + 30, "used, and the one still out"
        assert await redis.zcard(leases) == 1, "only the request still out keeps its lease"
        await limiter.settle(admissions[-1], 25)  # a long stream ends after its share
        await limiter.flush()
        assert int(await redis.get(day)) == 20 * 25, "what the 20 requests used"
        assert await redis.zcard(leases) == 0
        assert await redis.zcard(f"{prefix}:rl:key:big:req") == 20
        near = [Scope("key:small", Limits(requests_per_minute=100))]
        for _ in range(5):
            await limiter.admit(near, 1, 1)
        assert calls[0] == 6, "near its limits every request is checked in Redis"
    finally:
        keys = [k async for k in limiter.redis.scan_iter(f"{prefix}:*")]
        if keys:
            await limiter.redis.delete(*keys)
        await limiter.close()


async def test_a_busy_key_asks_redis_rarely_and_every_request_is_still_counted() -> None:
    """Shares renew in the background at three quarters used and double while a key is
    busy: 3,000 requests take a handful of Redis calls, and the counts stay exact."""
    prefix = f"test-rl-{secrets.token_hex(4)}"
    limiter, calls = await counted_limiter(prefix)
    scopes = [Scope("key:busy", Limits(requests_per_minute=10**7, max_concurrent=10**6,
                                       tokens_per_day=10**10))]
    try:
        for _ in range(3000):
            admission = await limiter.admit(scopes, 10, 20)
            await limiter.settle(admission, 25)
            await asyncio.sleep(0)  # a renewal in the background gets its turn
        assert calls[0] <= 20, f"{calls[0]} Redis calls for 3,000 requests"
        await limiter.flush()
        await asyncio.sleep(1.3)  # the last share goes back
        await limiter.flush()
        redis = limiter.redis
        assert await redis.zcard(f"{prefix}:rl:key:busy:req") == 3000
        assert await redis.zcard(f"{prefix}:rl:key:busy:lease") == 0
        day = [k async for k in redis.scan_iter(f"{prefix}:rl:key:busy:tok:day:*")][0]
        assert int(await redis.get(day)) == 3000 * 25
    finally:
        keys = [k async for k in limiter.redis.scan_iter(f"{prefix}:*")]
        if keys:
            await limiter.redis.delete(*keys)
        await limiter.close()


async def test_a_share_serves_only_the_scopes_and_limits_it_was_taken_for() -> None:
    """The share is found by a key of the scopes' names and limits (kept by ``Scopes``,
    built from a plain list alike): a key whose limits changed asks Redis again."""
    prefix = f"test-rl-{secrets.token_hex(4)}"
    limiter, calls = await counted_limiter(prefix)
    big = Limits(requests_per_minute=100_000, max_concurrent=10_000)
    try:
        await limiter.admit(Scopes([Scope("key:k", big)]), 10, 20)
        assert limiter.admit_here([Scope("key:k", big)], 10, 20) is not None, "same key"
        assert calls[0] == 1
        changed = [Scope("key:k", Limits(requests_per_minute=100_001, max_concurrent=10_000))]
        assert limiter.admit_here(changed, 10, 20) is None, "not the old limits' share"
        await limiter.admit(changed, 10, 20)
        assert calls[0] == 2
        assert scopes_key(Scopes([Scope("key:k", big)])) == scopes_key([Scope("key:k", big)])
    finally:
        keys = [k async for k in limiter.redis.scan_iter(f"{prefix}:*")]
        if keys:
            await limiter.redis.delete(*keys)
        await limiter.close()
