"""One way to open a Redis client, for every part of the gateway that shares Redis.

A connection error is retried once, at once, on a fresh connection: after a Redis restart
every pooled connection is stale, and without the retry each answered one 503 although
Redis was up again. Only once: with redis-py's default (10 retries, jittered backoff) a
request waited seconds for a Redis that is down, where a quick 503 serves it better.
Timeouts are not retried: the command may have run (an INCR would count twice).
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailableError


def redis_client(url: str, *, connect_timeout_s: float = 2.0, timeout_s: float = 5.0
                 ) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=connect_timeout_s,
        socket_timeout=timeout_s, retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError], health_check_interval=30,
    )


async def guarded(call: Any, what: str) -> Any:
    """Await a Redis call; its failure is the store's 503, named (``what``), for the
    stores that share Redis."""
    try:
        return await call
    except RedisError as exc:
        raise StoreUnavailableError(f"{what} failed: {exc}") from exc
