"""One SQLite connection owned by one worker thread, for the embedded stores
(conversations, managed keys, usage).

Every statement runs on that thread, so the event loop never blocks on disk and the
connection is never shared between threads; the file is in WAL mode, so readers in other
processes (the CLI) do not block it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import StoreUnavailableError

T = TypeVar("T")


class SqliteThread:
    def __init__(self, path: str | Path, *, schema: str, what: str) -> None:
        self.path = Path(path)
        self.schema = schema
        self.what = what  # "conversation store", "key store": named in errors
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{what}")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self.run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(self.schema)
        self._db = db

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"{self.what} failed: {exc}") from exc

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailableError(f"{self.what} is not open")
        return self._db

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None
        await self.run(close)
        self._executor.shutdown(wait=True)
