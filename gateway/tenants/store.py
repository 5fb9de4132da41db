"""Where managed keys and teams live: SQLite (embedded default) or Redis (replicas).

Both hold the same JSON records; the protocol is small on purpose (a key is written
whole, never patched field by field, so both stores stay trivially consistent).
"""

from __future__ import annotations

from typing import Protocol

from gateway.settings import Settings, StoreKind
from gateway.tenants.models import ManagedKey, Team


class KeyStore(Protocol):
    async def open(self) -> KeyStore: ...

    async def close(self) -> None: ...

    async def put_key(self, key: ManagedKey) -> None: ...

    async def get_key(self, key_id: str) -> ManagedKey | None: ...

    async def find_key(self, digest: str) -> ManagedKey | None: ...

    async def list_keys(self) -> list[ManagedKey]: ...

    async def count_keys(self) -> int: ...

    async def put_team(self, team: Team) -> None: ...

    async def get_team(self, name: str) -> Team | None: ...

    async def list_teams(self) -> list[Team]: ...

    async def delete_team(self, name: str) -> bool: ...


async def open_key_store(settings: Settings) -> KeyStore:
    if settings.keys_store is StoreKind.REDIS:
        from gateway.tenants.redis import RedisKeyStore

        return await RedisKeyStore.from_url(settings.keys_redis_url,
                                            prefix=settings.auth.key_prefix).open()
    from gateway.tenants.sqlite import SqliteKeyStore

    return await SqliteKeyStore(settings.keys_sqlite_path).open()
