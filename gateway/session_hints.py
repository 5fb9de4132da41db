"""Routing hints shared by gateway replicas: which backend a session went to last.

With Redis configured, every replica reads and writes the same hints, so a conversation
keeps its backend (and that backend's prefix cache) whichever replica receives a turn.
Without Redis the hints live in this process only.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.redis_client import redis_client

log = logging.getLogger("ragate.hints")


class SessionHints(Protocol):
    async def get(self, model: str, session: str) -> str | None: ...

    async def set(self, model: str, session: str, backend: str) -> None: ...

    async def close(self) -> None: ...


class LocalSessionHints:
    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._hints: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def get(self, model: str, session: str) -> str | None:
        return self._hints.get((model, session))

    async def set(self, model: str, session: str, backend: str) -> None:
        self._hints[(model, session)] = backend
        self._hints.move_to_end((model, session))
        if len(self._hints) > self.capacity:
            self._hints.popitem(last=False)

    async def close(self) -> None:
        return None


class RedisSessionHints:
    """Hints expire after ``ttl_s`` without use; a Redis failure only costs the hint."""

    def __init__(self, client: aioredis.Redis, prefix: str, ttl_s: int = 3600) -> None:
        self.redis = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    @classmethod
    def from_url(cls, url: str, prefix: str, ttl_s: int = 3600) -> RedisSessionHints:
        # a routing hint is worth at most a second of waiting
        return cls(redis_client(url, connect_timeout_s=1, timeout_s=1), prefix, ttl_s)

    def _key(self, model: str, session: str) -> str:
        return f"{self.prefix}:route:{model}:{session}"

    async def get(self, model: str, session: str) -> str | None:
        try:
            value = await self.redis.get(self._key(model, session))
        except RedisError as exc:
            log.warning("session hint lookup failed: %s", exc)
            return None
        return str(value) if value is not None else None

    async def set(self, model: str, session: str, backend: str) -> None:
        try:
            await self.redis.set(self._key(model, session), backend, ex=self.ttl_s)
        except RedisError as exc:
            log.warning("session hint write failed: %s", exc)

    async def close(self) -> None:
        await self.redis.aclose()
