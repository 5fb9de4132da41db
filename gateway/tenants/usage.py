"""Usage per key, team and model, per UTC day: requests, errors, prompt, completion and
cached tokens, from each reply's usage (reported by the backend or counted by us).

Kept in SQLite for one gateway, in Redis (one hash per day) when replicas share it; each
request adds one row's increments off the event loop. Read back by ``GET /v1/usage``
(one's own key) and ``GET /admin/usage`` (grouped by owner, team, key or model).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailableError
from gateway.redis_client import redis_client
from gateway.sqlite_thread import SqliteThread

METRICS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens")
DIMENSIONS = ("key_id", "owner", "team", "model")
_SEP = "\x1f"


@dataclass
class UsageRow:
    day: str
    key_id: str
    owner: str
    team: str
    model: str
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def add(self, other: UsageRow) -> None:
        for name in METRICS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_api(self) -> dict[str, Any]:
        return asdict(self)


def days_back(days: int, today: datetime | None = None) -> list[str]:
    today = today or datetime.now(UTC)
    return [(today - timedelta(days=n)).strftime("%Y-%m-%d") for n in range(days)]


def group(rows: Iterable[UsageRow], by: str) -> list[dict[str, Any]]:
    """Totals per value of ``by`` (one of the dimensions, or ``day``)."""
    totals: dict[str, dict[str, Any]] = {}
    for row in rows:
        value = getattr(row, by)
        total = totals.setdefault(value, {by: value, **dict.fromkeys(METRICS, 0)})
        for name in METRICS:
            total[name] += getattr(row, name)
    return sorted(totals.values(), key=lambda t: -t["prompt_tokens"] - t["completion_tokens"])


class UsageStore(Protocol):
    async def add_many(self, rows: list[UsageRow]) -> None: ...

    async def rows(self, days: list[str], key_id: str | None = None) -> list[UsageRow]: ...

    async def close(self) -> None: ...


SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL, key_id TEXT NOT NULL, owner TEXT NOT NULL, team TEXT NOT NULL,
    model TEXT NOT NULL, requests INTEGER NOT NULL, errors INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL,
    PRIMARY KEY (day, key_id, model, owner, team)
) WITHOUT ROWID;
"""


class SqliteUsageStore:
    def __init__(self, path: str | Path) -> None:
        self._thread = SqliteThread(path, schema=SCHEMA, what="usage store")
        self._run = self._thread.run

    async def open(self) -> SqliteUsageStore:
        await self._thread.open()
        return self

    @property
    def _db(self) -> sqlite3.Connection:
        return self._thread.db

    async def add_many(self, rows: list[UsageRow]) -> None:
        def add() -> None:
            with self._db:  # one transaction for the batch
                self._db.executemany(
                    "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO "
                    "UPDATE SET requests = requests + excluded.requests, errors = errors + "
                    "excluded.errors, prompt_tokens = prompt_tokens + excluded.prompt_tokens,"
                    " completion_tokens = completion_tokens + excluded.completion_tokens,"
                    " cached_tokens = cached_tokens + excluded.cached_tokens",
                    [(r.day, r.key_id, r.owner, r.team, r.model,
                      *(getattr(r, m) for m in METRICS)) for r in rows])
        await self._run(add)

    async def rows(self, days: list[str], key_id: str | None = None) -> list[UsageRow]:
        def read() -> list[UsageRow]:
            marks = ",".join("?" * len(days))
            sql = f"SELECT * FROM usage WHERE day IN ({marks})"
            params: list[Any] = list(days)
            if key_id is not None:
                sql += " AND key_id = ?"
                params.append(key_id)
            return [UsageRow(*r) for r in self._db.execute(sql, params)]
        return await self._run(read)

    async def close(self) -> None:
        await self._thread.close()


class RedisUsageStore:
    """``{p}:usage:{day}``: one hash per day, a field per (key, owner, team, model,
    metric), kept 400 days."""

    TTL_S = 400 * 86400

    def __init__(self, client: aioredis.Redis, prefix: str = "ragate") -> None:
        self.redis = client
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, prefix: str = "ragate") -> RedisUsageStore:
        return cls(redis_client(url, connect_timeout_s=1, timeout_s=2), prefix)

    async def add_many(self, rows: list[UsageRow]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            key = f"{self.prefix}:usage:{row.day}"
            dims = _SEP.join(getattr(row, d) for d in DIMENSIONS)
            for name in METRICS:
                value = getattr(row, name)
                if value:
                    pipe.hincrby(key, dims + _SEP + name, value)
            pipe.expire(key, self.TTL_S)
        try:
            await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailableError(f"usage store failed: {exc}") from exc

    async def rows(self, days: list[str], key_id: str | None = None) -> list[UsageRow]:
        out: dict[tuple[str, ...], UsageRow] = {}
        for day in days:
            try:
                fields = await self.redis.hgetall(f"{self.prefix}:usage:{day}")
            except RedisError as exc:
                raise StoreUnavailableError(f"usage store failed: {exc}") from exc
            for name, value in fields.items():
                *dims, metric = str(name).split(_SEP)  # decoded: redis_client decodes
                if len(dims) != len(DIMENSIONS) or metric not in METRICS:
                    continue
                if key_id is not None and dims[0] != key_id:
                    continue
                key, owner, team, model = dims
                row = out.setdefault((day, *dims), UsageRow(day, key, owner, team, model))
                setattr(row, metric, getattr(row, metric) + int(value))
        return list(out.values())

    async def close(self) -> None:
        await self.redis.aclose()
