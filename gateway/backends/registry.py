"""The admin's backend changes (add, drain, undrain, remove), persisted and shared.

The config file seeds the pool; the registry holds what the admin changed over it. Each
change is validated against this replica's pool, written to the store, then applied
here; every replica polls the store every ``pool.registry_poll_s`` and applies the
records it has not seen, so an add, drain or remove reaches all of them within that
bound (plus one health probe for an added backend to be probed), and a restart replays
them over the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gateway.backends.backend import Backend
from gateway.backends.pool import BackendPool
from gateway.backends.registry_stores import (
    Record,
    RedisRegistryStore,
    RegistryStore,
    SqliteRegistryStore,
)
from gateway.errors import GatewayError
from gateway.settings import BackendConfig, Settings, StoreKind, backend_name

log = logging.getLogger("ragate.registry")


class BackendRegistry:
    def __init__(self, pool: BackendPool, store: RegistryStore, poll_s: float = 1.0) -> None:
        self.pool = pool
        self.store = store
        self.poll_s = poll_s
        self.applied = 0  # the newest sequence number this replica has applied
        self._records: dict[str, Record] = {}
        self._task: asyncio.Task[None] | None = None
        # a change and a sync never interleave: the sync would apply the change's own
        # record between its write and its apply
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self.sync()
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.store.close()

    # -- the admin's changes ---------------------------------------------------------------

    async def add(self, model: str, config: BackendConfig) -> Backend:
        async with self._lock:
            self.pool.check_add(model, config)
            name = backend_name(config)
            record = self._record(name)
            record["targets"] = [*record["targets"],
                                 {"model": model, "config": config.model_dump(mode="json")}]
            record["removed"] = False
            await self._write(record)
            return self.pool.add_backend(model, config)

    async def drain(self, name: str, drained: bool = True) -> Backend:
        async with self._lock:
            self.pool.backend(name)  # 404 before anything is written
            record = self._record(name)
            record["drained"] = drained
            await self._write(record)
            return self.pool.drain(name) if drained else self.pool.undrain(name)

    async def remove(self, name: str) -> Backend:
        async with self._lock:
            self.pool.backend(name)
            record = {**self._record(name), "targets": [], "drained": False, "removed": True}
            await self._write(record)
            return self.pool.remove(name)

    def _record(self, name: str) -> Record:
        found = self._records.get(name)
        if found is None or found.get("removed"):
            return {"name": name, "targets": [], "drained": False, "removed": False}
        return {**found, "targets": list(found["targets"])}

    async def _write(self, record: Record) -> None:
        seq = await self.store.put(record)
        self._records[record["name"]] = record
        if seq == self.applied + 1:  # nobody else wrote in between: nothing to catch up
            self.applied = seq

    # -- agreement -------------------------------------------------------------------------

    async def sync(self) -> int:
        """Apply every record newer than the last applied; return how many."""
        async with self._lock:
            newest, records = await self.store.since(self.applied)
            for record in records:
                self._apply(record)
                self._records[record["name"]] = record
            self.applied = max(self.applied, newest)
            return len(records)

    def _apply(self, record: Record) -> None:
        name = record["name"]
        try:
            if record.get("removed"):
                if name in self.pool.backends:
                    self.pool.remove(name)
                return
            for target in record["targets"]:
                config = BackendConfig(**target["config"])
                if not self.pool.serves(name, target["model"]):
                    self.pool.add_backend(target["model"], config)
            if name in self.pool.backends:
                self.pool.backends[name].draining = bool(record.get("drained"))
        except (GatewayError, ValueError) as exc:
            # another replica's config may disagree with ours (a name for another URL)
            log.warning("backend registry: record %s not applied here: %s", name, exc)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.sync()
            except GatewayError as exc:  # the store is away: try again next round
                log.warning("backend registry: %s", exc)
            except Exception:
                log.exception("backend registry sync failed")

    def describe(self) -> dict[str, Any]:
        return {"applied": self.applied, "poll_s": self.poll_s,
                "store": type(self.store).__name__}


async def open_registry(settings: Settings, pool: BackendPool) -> BackendRegistry:
    """Redis when the conversation store is (the replicas' shared state), else SQLite."""
    config = settings.pool
    store: RegistryStore
    if (config.registry_store or settings.conversations.store) is StoreKind.REDIS:
        store = RedisRegistryStore.from_url(config.registry_redis_url
                                            or settings.conversations.redis_url,
                                            prefix=settings.conversations.key_prefix)
    else:
        store = SqliteRegistryStore(config.registry_sqlite_path
                                    or settings.server.data_dir / "backends.db")
    return BackendRegistry(pool, await store.open(), poll_s=config.registry_poll_s)
