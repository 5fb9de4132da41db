"""SQLite conversation store: the embedded default, one file in WAL mode, every
statement on the one worker thread that owns the connection (``gateway.sqlite_thread``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from gateway.conversations.models import Conversation, Item, ItemStatus, Page, Summary, now
from gateway.conversations.store import Order, record_append
from gateway.errors import ConversationBusyError, NotFoundError
from gateway.sqlite_thread import SqliteThread

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_by_owner ON conversations (owner, created_at, id);
CREATE INDEX IF NOT EXISTS conversations_by_time ON conversations (created_at, id);
CREATE TABLE IF NOT EXISTS items (
    conversation_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL UNIQUE,
    turn INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
"""


class SqliteConversationStore:
    def __init__(self, path: str | Path, *, ttl_s: float | None = None,
                 max_turns: int | None = None) -> None:
        self.path = Path(path)
        self.ttl_s = ttl_s
        self.max_turns = max_turns
        self._thread = SqliteThread(path, schema=SCHEMA, what="conversation store")
        self._run = self._thread.run
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    async def open(self) -> SqliteConversationStore:
        await self._thread.open()
        return self

    @property
    def db(self) -> sqlite3.Connection:
        return self._thread.db

    async def ping(self) -> None:
        await self._run(self.db.execute, "SELECT 1 FROM conversations LIMIT 1")

    async def close(self) -> None:
        await self._thread.close()

    # -- conversations --------------------------------------------------------------------

    async def create(self, conversation: Conversation) -> Conversation:
        conversation.updated_at = conversation.updated_at or conversation.created_at
        if self.ttl_s:
            conversation.expires_at = conversation.updated_at + self.ttl_s
        await self._run(self._write_conversation, conversation, True)
        return conversation

    def _write_conversation(self, c: Conversation, insert: bool = False) -> None:
        sql = ("INSERT INTO conversations (id, owner, created_at, expires_at, data) "
               "VALUES (?, ?, ?, ?, ?)" if insert else
               "UPDATE conversations SET expires_at = ?, data = ? WHERE id = ?")
        data = json.dumps(c.to_dict())
        params = ((c.id, c.owner, c.created_at, c.expires_at, data) if insert
                  else (c.expires_at, data, c.id))
        self.db.execute(sql, params)

    def _get(self, conversation_id: str) -> Conversation | None:
        row = self.db.execute(
            "SELECT data, expires_at FROM conversations WHERE id = ?", (conversation_id,)
        ).fetchone()
        if row is None:
            return None
        if row[1] is not None and row[1] <= now():
            self._delete(conversation_id)
            return None
        return Conversation.from_dict(json.loads(row[0]))

    async def get(self, conversation_id: str) -> Conversation | None:
        return await self._run(self._get, conversation_id)

    async def list_conversations(
        self, owner: str | None, *, limit: int = 20, after: str | None = None,
        order: Order = "desc",
    ) -> Page:
        return await self._run(self._list, owner, limit, after, order)

    def _list(self, owner: str | None, limit: int, after: str | None, order: Order) -> Page:
        where: list[str] = ["(expires_at IS NULL OR expires_at > ?)"]
        params: list[Any] = [now()]
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        if after is not None:
            cursor = self.db.execute(
                "SELECT created_at FROM conversations WHERE id = ?", (after,)).fetchone()
            if cursor is not None:
                op = "<" if order == "desc" else ">"
                where.append(f"(created_at, id) {op} (?, ?)")
                params += [cursor[0], after]
        direction = "DESC" if order == "desc" else "ASC"
        rows = self.db.execute(
            f"SELECT data FROM conversations WHERE {' AND '.join(where)} "
            f"ORDER BY created_at {direction}, id {direction} LIMIT ?", (*params, limit + 1),
        ).fetchall()
        data = [Conversation.from_dict(json.loads(r[0])) for r in rows[:limit]]
        return Page(data, has_more=len(rows) > limit)

    async def update_metadata(self, conversation_id: str,
                              metadata: dict[str, str]) -> Conversation | None:
        def _update() -> Conversation | None:
            conversation = self._get(conversation_id)
            if conversation is None:
                return None
            conversation.metadata = {**conversation.metadata, **metadata}
            conversation.updated_at = now()
            self._write_conversation(conversation)
            return conversation
        return await self._run(self._in_transaction, _update)

    def _delete(self, conversation_id: str) -> bool:
        self.db.execute("DELETE FROM items WHERE conversation_id = ?", (conversation_id,))
        cur = self.db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        return cur.rowcount > 0

    async def delete(self, conversation_id: str) -> bool:
        return await self._run(self._in_transaction, lambda: self._delete(conversation_id))

    def _in_transaction(self, fn: Callable[[], T]) -> T:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            result = fn()
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return result

    # -- items ----------------------------------------------------------------------------

    async def items(self, conversation_id: str, *, limit: int | None = None,
                    after: str | None = None, order: Order = "asc") -> Page:
        return await self._run(self._items, conversation_id, limit, after, order)

    def _items(self, conversation_id: str, limit: int | None, after: str | None,
               order: Order) -> Page:
        where, params = ["conversation_id = ?"], [conversation_id]
        if after is not None:
            row = self.db.execute("SELECT seq FROM items WHERE id = ?", (after,)).fetchone()
            if row is not None:
                where.append("seq > ?" if order == "asc" else "seq < ?")
                params.append(row[0])
        direction = "ASC" if order == "asc" else "DESC"
        sql = f"SELECT data FROM items WHERE {' AND '.join(where)} ORDER BY seq {direction}"
        if limit is not None:
            sql += f" LIMIT {int(limit) + 1}"
        rows = self.db.execute(sql, params).fetchall()
        page = rows if limit is None else rows[:limit]
        return Page([Item.from_dict(json.loads(r[0])) for r in page],
                    has_more=limit is not None and len(rows) > limit)

    async def append_turn(
        self,
        conversation_id: str,
        messages: Sequence[dict[str, Any]],
        *,
        status: ItemStatus = ItemStatus.COMPLETED,
        last_prompt: Sequence[tuple[str, int]] | None = None,
        summary: Summary | None = None,
    ) -> list[Item]:
        def _append() -> list[Item]:
            conversation = self._get(conversation_id)
            if conversation is None:
                raise KeyError(conversation_id)
            row = self.db.execute(
                "SELECT COALESCE(MAX(seq), -1) FROM items WHERE conversation_id = ?",
                (conversation_id,)).fetchone()
            items = record_append(conversation, messages, first_seq=row[0] + 1, status=status,
                                  last_prompt=last_prompt, summary=summary, ttl_s=self.ttl_s)
            self.db.executemany(
                "INSERT INTO items (conversation_id, seq, id, turn, data) VALUES (?, ?, ?, ?, ?)",
                [(i.conversation_id, i.seq, i.id, i.turn, json.dumps(i.to_dict())) for i in items],
            )
            if self.max_turns is not None:
                self.db.execute("DELETE FROM items WHERE conversation_id = ? AND turn < ?",
                                (conversation_id, conversation.turns - self.max_turns))
            self._write_conversation(conversation)
            return items
        try:
            return await self._run(self._in_transaction, _append)
        except KeyError:
            raise NotFoundError(f"conversation {conversation_id} not found") from None

    @asynccontextmanager
    async def lock(self, conversation_id: str, wait_s: float) -> AsyncIterator[None]:
        # SQLite serves one gateway process, so an in-process lock serialises fully; the
        # count of holders and waiters lets the lock go once nobody needs it
        lock, users = self._locks.get(conversation_id, (asyncio.Lock(), 0))
        self._locks[conversation_id] = (lock, users + 1)
        try:
            if lock.locked() and wait_s <= 0:
                raise ConversationBusyError(conversation_id)
            try:
                await asyncio.wait_for(lock.acquire(), timeout=wait_s if wait_s > 0 else None)
            except TimeoutError:
                raise ConversationBusyError(conversation_id) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._locks[conversation_id]
            if users == 1:
                del self._locks[conversation_id]
            else:
                self._locks[conversation_id] = (lock, users - 1)
