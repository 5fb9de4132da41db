"""Managed keys in Redis, shared by every replica.

    {p}:apikey:{id}        the key's JSON record
    {p}:apikey-digest:{d}  its id, by the secret's digest
    {p}:apikeys            the ids, in creation order (a sorted set)
    {p}:team:{name}        a team's JSON record; {p}:teams the names
"""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from gateway.redis_client import guarded, redis_client
from gateway.tenants.models import ManagedKey, Team


class RedisKeyStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "ragate") -> None:
        self.redis = client
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = "ragate") -> RedisKeyStore:
        return cls(redis_client(url), prefix)

    async def open(self) -> RedisKeyStore:
        await self._call(self.redis.ping())
        return self

    async def close(self) -> None:
        await self.redis.aclose()

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def _call(self, coro: Any) -> Any:
        return await guarded(coro, "key store")

    async def put_key(self, key: ManagedKey) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._k("apikey", key.id), json.dumps(key.to_dict()))
        pipe.set(self._k("apikey-digest", key.digest), key.id)
        pipe.zadd(self._k("apikeys"), {key.id: key.created_at}, nx=True)
        await self._call(pipe.execute())

    async def get_key(self, key_id: str) -> ManagedKey | None:
        raw = await self._call(self.redis.get(self._k("apikey", key_id)))
        return ManagedKey.from_dict(json.loads(raw)) if raw else None

    async def find_key(self, digest: str) -> ManagedKey | None:
        key_id = await self._call(self.redis.get(self._k("apikey-digest", digest)))
        return await self.get_key(key_id) if key_id else None

    async def list_keys(self) -> list[ManagedKey]:
        ids = await self._call(self.redis.zrange(self._k("apikeys"), 0, -1))
        if not ids:
            return []
        raws = await self._call(self.redis.mget([self._k("apikey", i) for i in ids]))
        return [ManagedKey.from_dict(json.loads(r)) for r in raws if r]

    async def count_keys(self) -> int:
        return int(await self._call(self.redis.zcard(self._k("apikeys"))))

    async def put_team(self, team: Team) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._k("team", team.name), json.dumps(team.to_dict()))
        pipe.sadd(self._k("teams"), team.name)
        await self._call(pipe.execute())

    async def get_team(self, name: str) -> Team | None:
        raw = await self._call(self.redis.get(self._k("team", name)))
        return Team.from_dict(json.loads(raw)) if raw else None

    async def list_teams(self) -> list[Team]:
        names = sorted(await self._call(self.redis.smembers(self._k("teams"))))
        teams = [await self.get_team(n) for n in names]
        return [t for t in teams if t is not None]

    async def delete_team(self, name: str) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self._k("team", name))
        pipe.srem(self._k("teams"), name)
        deleted, _ = await self._call(pipe.execute())
        return bool(deleted)
