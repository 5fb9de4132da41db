"""Where the admin's backend changes persist: SQLite (embedded) or Redis (replicas).

A record is one backend's whole state as the admin left it (the targets added at run
time, drained, removed), written whole under a sequence number that the store assigns
atomically; a replica asks for the records newer than the last number it applied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis

from gateway.redis_client import guarded, redis_client
from gateway.sqlite_thread import SqliteThread

Record = dict[str, Any]  # {"name", "targets": [{"model", "config"}], "drained", "removed"}


class RegistryStore(Protocol):
    async def open(self) -> RegistryStore: ...

    async def close(self) -> None: ...

    async def put(self, record: Record) -> int:
        """Store ``record`` (keyed by its name) and return its new sequence number."""
        ...

    async def since(self, seq: int) -> tuple[int, list[Record]]:
        """The newest sequence number and the records written after ``seq``, oldest first."""
        ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS backends (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL
);
"""


class SqliteRegistryStore:
    def __init__(self, path: str | Path) -> None:
        self._thread = SqliteThread(path, schema=SCHEMA, what="backend registry")
        self._run = self._thread.run

    async def open(self) -> SqliteRegistryStore:
        await self._thread.open()
        return self

    async def close(self) -> None:
        await self._thread.close()

    async def put(self, record: Record) -> int:
        def put() -> int:
            # one statement, so two processes on one file never hand out the same number
            row = self._thread.db.execute(
                "INSERT INTO backends (name, seq, data) VALUES "
                "(?, (SELECT coalesce(max(seq), 0) + 1 FROM backends), ?) ON CONFLICT(name) "
                "DO UPDATE SET seq = (SELECT max(seq) + 1 FROM backends), data = excluded.data "
                "RETURNING seq", (record["name"], json.dumps(record))).fetchone()
            return int(row[0])
        return await self._run(put)

    async def since(self, seq: int) -> tuple[int, list[Record]]:
        def since() -> tuple[int, list[Record]]:
            db = self._thread.db
            newest = int(db.execute("SELECT coalesce(max(seq), 0) FROM backends").fetchone()[0])
            if newest <= seq:
                return newest, []
            rows = db.execute("SELECT seq, data FROM backends WHERE seq > ? ORDER BY seq",
                              (seq,)).fetchall()
            return newest, [{**json.loads(data), "seq": s} for s, data in rows]
        return await self._run(since)


# KEYS: the records hash, the sequence counter, the names by sequence; ARGV: name, record.
# A new counter starts at Redis' clock in microseconds, not at 1: a Redis that lost its
# data (restarted without persistence) numbers its next writes above every number a live
# replica applied before, so the replicas still see them (starting at 1, a replica that
# had applied 40 ignored the next 40 changes). Below 2^53 until the year 2255.
_PUT = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[2], now[1] * 1000000 + now[2])
end
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], seq, ARGV[1])
return seq
"""


class RedisRegistryStore:
    """    {p}:backends       name -> record JSON
    {p}:backends:seq   the newest sequence number (what a replica polls: one GET), from
                       Redis' clock in microseconds when the first write made it
    {p}:backends:order name by its record's sequence number (a sorted set)"""

    def __init__(self, client: aioredis.Redis, prefix: str = "ragate") -> None:
        self.redis = client
        self.keys = [f"{prefix}:backends", f"{prefix}:backends:seq", f"{prefix}:backends:order"]
        self._put = client.register_script(_PUT)

    @classmethod
    def from_url(cls, url: str, prefix: str = "ragate") -> RedisRegistryStore:
        return cls(redis_client(url), prefix)

    async def open(self) -> RedisRegistryStore:
        await guarded(self.redis.ping(), "backend registry")
        return self

    async def close(self) -> None:
        await self.redis.aclose()

    async def put(self, record: Record) -> int:
        call = self._put(keys=self.keys, args=[record["name"], json.dumps(record)])
        return int(await guarded(call, "backend registry"))

    async def since(self, seq: int) -> tuple[int, list[Record]]:
        records_key, seq_key, order_key = self.keys
        newest = int(await guarded(self.redis.get(seq_key), "backend registry") or 0)
        if newest <= seq:
            return newest, []
        pairs = await guarded(self.redis.zrangebyscore(order_key, f"({seq}", "+inf",
                                                       withscores=True), "backend registry")
        if not pairs:
            return newest, []
        raws = await guarded(self.redis.hmget(records_key, [n for n, _ in pairs]),
                             "backend registry")
        return newest, [{**json.loads(raw), "seq": int(s)}
                        for (_, s), raw in zip(pairs, raws, strict=True) if raw]
