"""Redis conversation store: for many gateway replicas sharing conversations and locks.

Keys (``{p}`` is the configured prefix):
- ``{p}:conv:{id}``      JSON of the conversation record
- ``{p}:items:{id}``     list of item JSON, oldest first
- ``{p}:owner:{owner}``  sorted set of conversation ids by creation time
- ``{p}:convs``          sorted set of every conversation id (admin listing)
- ``{p}:lock:{id}``      the per-conversation lock (token, with a TTL, renewed while held)
Appends run in one MULTI/EXEC transaction, under the conversation's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.conversations.models import Conversation, Item, ItemStatus, Page, Summary, now
from gateway.conversations.store import Order, record_append
from gateway.errors import ConversationBusyError, NotFoundError, StoreUnavailableError
from gateway.redis_client import guarded, redis_client

# delete / extend the lock only if we still own it
_RELEASE = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('del', KEYS[1]) end return 0")
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then "
          "return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0")


class RedisConversationStore:
    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "ragate",
        ttl_s: float | None = None,
        max_turns: int | None = None,
        lock_ttl_s: float = 10.0,
    ) -> None:
        self.redis = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.max_turns = max_turns
        self.lock_ttl_ms = int(lock_ttl_s * 1000)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisConversationStore:
        return cls(redis_client(url), **kwargs)

    async def open(self) -> RedisConversationStore:
        try:
            await self.redis.ping()
        except RedisError as exc:
            raise StoreUnavailableError(f"redis is unreachable: {exc}") from exc
        return self

    async def ping(self) -> None:
        await self._call(self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()

    def _k(self, kind: str, key: str = "") -> str:
        return f"{self.prefix}:{kind}:{key}" if key else f"{self.prefix}:{kind}"

    async def _call(self, coro: Any) -> Any:
        return await guarded(coro, "conversation store")

    # -- conversations --------------------------------------------------------------------

    async def create(self, conversation: Conversation) -> Conversation:
        conversation.updated_at = conversation.updated_at or conversation.created_at
        if self.ttl_s:
            conversation.expires_at = conversation.updated_at + self.ttl_s
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self._k("conv", conversation.id), json.dumps(conversation.to_dict()),
                 px=self._ttl_ms())
        pipe.zadd(self._k("owner", conversation.owner), {conversation.id: conversation.created_at})
        pipe.zadd(self._k("convs"), {conversation.id: conversation.created_at})
        await self._call(pipe.execute())
        return conversation

    def _ttl_ms(self) -> int | None:
        return int(self.ttl_s * 1000) if self.ttl_s else None

    async def get(self, conversation_id: str) -> Conversation | None:
        raw = await self._call(self.redis.get(self._k("conv", conversation_id)))
        return None if raw is None else Conversation.from_dict(json.loads(raw))

    async def list_conversations(
        self, owner: str | None, *, limit: int = 20, after: str | None = None,
        order: Order = "desc",
    ) -> Page:
        index = self._k("owner", owner) if owner is not None else self._k("convs")
        ids: list[str] = await self._call(
            self.redis.zrange(index, 0, -1, desc=order == "desc"))
        if after is not None and after in ids:
            ids = ids[ids.index(after) + 1:]
        found: list[Conversation] = []
        stale: list[str] = []
        for start in range(0, len(ids), max(limit, 1) * 2):
            batch = ids[start:start + max(limit, 1) * 2]
            raws = await self._call(self.redis.mget([self._k("conv", i) for i in batch]))
            for cid, raw in zip(batch, raws, strict=True):
                if raw is None:
                    stale.append(cid)  # expired by TTL: drop it from the indexes lazily
                else:
                    found.append(Conversation.from_dict(json.loads(raw)))
            if len(found) > limit:
                break
        if stale:
            await self._call(self.redis.zrem(index, *stale))
        return Page(found[:limit], has_more=len(found) > limit)

    async def update_metadata(self, conversation_id: str,
                              metadata: dict[str, str]) -> Conversation | None:
        conversation = await self.get(conversation_id)
        if conversation is None:
            return None
        conversation.metadata = {**conversation.metadata, **metadata}
        conversation.updated_at = now()
        await self._call(self.redis.set(self._k("conv", conversation_id),
                                        json.dumps(conversation.to_dict()), keepttl=True))
        return conversation

    async def delete(self, conversation_id: str) -> bool:
        conversation = await self.get(conversation_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self._k("conv", conversation_id), self._k("items", conversation_id))
        pipe.zrem(self._k("convs"), conversation_id)
        if conversation is not None:
            pipe.zrem(self._k("owner", conversation.owner), conversation_id)
        deleted, *_ = await self._call(pipe.execute())
        return bool(deleted) and conversation is not None

    # -- items ----------------------------------------------------------------------------

    async def items(self, conversation_id: str, *, limit: int | None = None,
                    after: str | None = None, order: Order = "asc") -> Page:
        raws = await self._call(self.redis.lrange(self._k("items", conversation_id), 0, -1))
        items = [Item.from_dict(json.loads(r)) for r in raws]
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [i.id for i in items]
            if after in ids:
                items = items[ids.index(after) + 1:]
        if limit is None:
            return Page(items, has_more=False)
        return Page(items[:limit], has_more=len(items) > limit)

    async def append_turn(
        self,
        conversation_id: str,
        messages: Sequence[dict[str, Any]],
        *,
        status: ItemStatus = ItemStatus.COMPLETED,
        last_prompt: Sequence[tuple[str, int]] | None = None,
        summary: Summary | None = None,
    ) -> list[Item]:
        conversation = await self.get(conversation_id)
        if conversation is None:
            raise NotFoundError(f"conversation {conversation_id} not found")
        items_key = self._k("items", conversation_id)
        last = await self._call(self.redis.lindex(items_key, -1))
        items = record_append(
            conversation, messages, first_seq=0 if last is None else json.loads(last)["seq"] + 1,
            status=status, last_prompt=last_prompt, summary=summary, ttl_s=self.ttl_s)
        pipe = self.redis.pipeline(transaction=True)
        if items:
            pipe.rpush(items_key, *(json.dumps(i.to_dict()) for i in items))
        pipe.set(self._k("conv", conversation_id), json.dumps(conversation.to_dict()),
                 px=self._ttl_ms(), keepttl=self._ttl_ms() is None)
        ttl_ms = self._ttl_ms()
        if ttl_ms:
            pipe.pexpire(items_key, ttl_ms)
        await self._call(pipe.execute())
        if self.max_turns is not None:
            await self._trim(items_key, conversation.turns - self.max_turns)
        return items

    async def _trim(self, items_key: str, first_kept_turn: int) -> None:
        if first_kept_turn <= 0:
            return
        raws = await self._call(self.redis.lrange(items_key, 0, -1))
        drop = sum(1 for r in raws if json.loads(r)["turn"] < first_kept_turn)
        if drop:
            await self._call(self.redis.ltrim(items_key, drop, -1))

    @asynccontextmanager
    async def lock(self, conversation_id: str, wait_s: float) -> AsyncIterator[None]:
        """A lock every replica respects; it expires if its holder dies, renewed meanwhile."""
        key, token = self._k("lock", conversation_id), secrets.token_hex(16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(wait_s, 0)
        delay = 0.01
        while not await self._call(self.redis.set(key, token, nx=True, px=self.lock_ttl_ms)):
            if loop.time() >= deadline:
                raise ConversationBusyError(conversation_id)
            await asyncio.sleep(min(delay, max(deadline - loop.time(), 0)))
            delay = min(delay * 2, 0.25)
        renewer = loop.create_task(self._renew(key, token))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(RedisError):
                await self.redis.eval(_RELEASE, 1, key, token)  # type: ignore[misc]

    async def _renew(self, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.lock_ttl_ms / 3000)
            with contextlib.suppress(RedisError):
                await self.redis.eval(_RENEW, 1, key, token, self.lock_ttl_ms)  # type: ignore[misc]
