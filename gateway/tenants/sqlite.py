"""Managed keys in SQLite: one small file (``gateway.sqlite_thread``)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from gateway.sqlite_thread import SqliteThread
from gateway.tenants.models import ManagedKey, Team

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL UNIQUE,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS teams (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
"""


class SqliteKeyStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._thread = SqliteThread(path, schema=SCHEMA, what="key store")
        self._run = self._thread.run

    async def open(self) -> SqliteKeyStore:
        await self._thread.open()
        return self

    async def close(self) -> None:
        await self._thread.close()

    @property
    def db(self) -> sqlite3.Connection:
        return self._thread.db

    async def put_key(self, key: ManagedKey) -> None:
        await self._run(self.db.execute,
                        "INSERT INTO api_keys (id, digest, data) VALUES (?, ?, ?) ON CONFLICT"
                        "(id) DO UPDATE SET data = excluded.data",
                        (key.id, key.digest, json.dumps(key.to_dict())))

    def _one_key(self, sql: str, value: str) -> ManagedKey | None:
        row = self.db.execute(sql, (value,)).fetchone()
        return ManagedKey.from_dict(json.loads(row[0])) if row else None

    async def get_key(self, key_id: str) -> ManagedKey | None:
        return await self._run(self._one_key, "SELECT data FROM api_keys WHERE id = ?", key_id)

    async def find_key(self, digest: str) -> ManagedKey | None:
        return await self._run(self._one_key, "SELECT data FROM api_keys WHERE digest = ?",
                               digest)

    async def list_keys(self) -> list[ManagedKey]:
        def rows() -> list[ManagedKey]:
            return [ManagedKey.from_dict(json.loads(r[0])) for r in
                    self.db.execute("SELECT data FROM api_keys ORDER BY rowid")]
        return await self._run(rows)

    async def count_keys(self) -> int:
        def count() -> int:
            return int(self.db.execute("SELECT count(*) FROM api_keys").fetchone()[0])
        return await self._run(count)

    async def put_team(self, team: Team) -> None:
        await self._run(self.db.execute,
                        "INSERT INTO teams (name, data) VALUES (?, ?) ON CONFLICT(name) DO "
                        "UPDATE SET data = excluded.data", (team.name, json.dumps(team.to_dict())))

    async def get_team(self, name: str) -> Team | None:
        def one() -> Team | None:
            row = self.db.execute("SELECT data FROM teams WHERE name = ?", (name,)).fetchone()
            return Team.from_dict(json.loads(row[0])) if row else None
        return await self._run(one)

    async def list_teams(self) -> list[Team]:
        def rows() -> list[Team]:
            return [Team.from_dict(json.loads(r[0])) for r in
                    self.db.execute("SELECT data FROM teams ORDER BY name")]
        return await self._run(rows)

    async def delete_team(self, name: str) -> bool:
        def delete() -> bool:
            return self.db.execute("DELETE FROM teams WHERE name = ?", (name,)).rowcount > 0
        return await self._run(delete)
