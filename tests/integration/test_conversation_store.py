"""One suite, two stores: SQLite (a file) and Redis (the real server on 127.0.0.1:6379)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.conversations.models import Conversation, ItemStatus, Summary, new_id, now
from gateway.conversations.redis import RedisConversationStore
from gateway.conversations.sqlite import SqliteConversationStore
from gateway.conversations.store import ConversationStore
from gateway.errors import ConflictError, NotFoundError, StoreUnavailableError

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
Factory = Callable[..., Any]


@pytest.fixture(params=["sqlite", "redis"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """Opens a store; calling it again opens a *new* store on the same data (a restart)."""
    opened: list[Any] = []
    prefix = f"ragate-test-{secrets.token_hex(4)}"

    async def factory(**kwargs: Any) -> ConversationStore:
        if request.param == "sqlite":
            store: Any = SqliteConversationStore(tmp_path / "conv.db", **kwargs)
        else:
            store = RedisConversationStore.from_url(REDIS_URL, prefix=prefix, **kwargs)
        await store.open()
        opened.append(store)
        return store  # type: ignore[no-any-return]

    yield factory
    if request.param == "redis" and opened:
        keys = [k async for k in opened[0].redis.scan_iter(f"{prefix}:*")]
        if keys:
            await opened[0].redis.delete(*keys)
    for store in opened:
        await store.close()


def conversation(owner: str = "alice", **metadata: str) -> Conversation:
    return Conversation(id=new_id("conv"), owner=owner, created_at=now(), metadata=metadata)


USER = {"role": "user", "content": "hello"}
ASSISTANT = {"role": "assistant", "content": "hi!"}


async def test_create_get_survives_restart(make_store: Factory) -> None:
    store = await make_store()
    c = await store.create(conversation(persona="pirate", model="smollm2"))
    await store.append_turn(c.id, [USER, ASSISTANT], last_prompt=[("h1", 10)])
    restarted = await make_store()
    again = await restarted.get(c.id)
    assert again is not None
    assert again.metadata == {"persona": "pirate", "model": "smollm2"}
    assert again.turns == 1 and again.last_prompt == [("h1", 10)]
    items = (await restarted.items(c.id)).data
    assert [i.message for i in items] == [USER, ASSISTANT]
    assert [i.turn for i in items] == [0, 0] and [i.seq for i in items] == [0, 1]


async def test_missing_conversation(make_store: Factory) -> None:
    store = await make_store()
    assert await store.get("conv_nope") is None
    assert await store.delete("conv_nope") is False
    with pytest.raises(NotFoundError):
        await store.append_turn("conv_nope", [USER])


async def test_list_is_per_owner_and_paged(make_store: Factory) -> None:
    store = await make_store()
    mine = []
    for i in range(5):
        c = conversation("alice")
        c.created_at += i  # distinct, increasing
        mine.append(await store.create(c))
    await store.create(conversation("bob"))
    first = await store.list_conversations("alice", limit=2)
    assert [c.id for c in first.data] == [mine[4].id, mine[3].id] and first.has_more
    second = await store.list_conversations("alice", limit=2, after=first.data[-1].id)
    assert [c.id for c in second.data] == [mine[2].id, mine[1].id] and second.has_more
    third = await store.list_conversations("alice", limit=2, after=second.data[-1].id)
    assert [c.id for c in third.data] == [mine[0].id] and not third.has_more
    oldest_first = await store.list_conversations("alice", limit=10, order="asc")
    assert [c.id for c in oldest_first.data] == [c.id for c in mine]
    everyone = await store.list_conversations(None, limit=100)
    assert len(everyone.data) == 6, "admin sees every owner"


async def test_items_paging_and_order(make_store: Factory) -> None:
    store = await make_store()
    c = await store.create(conversation())
    for n in range(3):
        await store.append_turn(c.id, [{"role": "user", "content": f"u{n}"},
                                       {"role": "assistant", "content": f"a{n}"}])
    page = await store.items(c.id, limit=4)
    assert [i.message["content"] for i in page.data] == ["u0", "a0", "u1", "a1"] and page.has_more
    rest = await store.items(c.id, limit=4, after=page.data[-1].id)
    assert [i.message["content"] for i in rest.data] == ["u2", "a2"] and not rest.has_more
    newest = await store.items(c.id, limit=1, order="desc")
    assert newest.data[0].message["content"] == "a2"


async def test_append_keeps_turn_status_summary(make_store: Factory) -> None:
    store = await make_store()
    c = await store.create(conversation())
    await store.append_turn(c.id, [USER, ASSISTANT])
    await store.append_turn(c.id, [USER, {"role": "assistant", "content": "par"}],
                            status=ItemStatus.INTERRUPTED, summary=Summary("they met", 1))
    got = await store.get(c.id)
    assert got is not None and got.turns == 2 and got.summary == Summary("they met", 1)
    items = (await store.items(c.id)).data
    assert [i.status for i in items] == [ItemStatus.COMPLETED] * 2 + [ItemStatus.INTERRUPTED] * 2


async def test_update_metadata_and_delete(make_store: Factory) -> None:
    store = await make_store()
    c = await store.create(conversation(persona="a"))
    updated = await store.update_metadata(c.id, {"knowledge_base": "kb1"})
    assert updated is not None and updated.metadata == {"persona": "a", "knowledge_base": "kb1"}
    await store.append_turn(c.id, [USER])
    assert await store.delete(c.id) is True
    assert await store.get(c.id) is None
    assert (await store.items(c.id)).data == []
    assert (await store.list_conversations("alice")).data == []


async def test_max_turns_retention(make_store: Factory) -> None:
    store = await make_store(max_turns=2)
    c = await store.create(conversation())
    for n in range(4):
        await store.append_turn(c.id, [{"role": "user", "content": f"u{n}"}, ASSISTANT])
    items = (await store.items(c.id)).data
    assert [i.turn for i in items] == [2, 2, 3, 3]
    assert (await store.get(c.id)).turns == 4  # type: ignore[union-attr]


async def test_ttl_expires_conversations(make_store: Factory) -> None:
    store = await make_store(ttl_s=0.3)
    c = await store.create(conversation())
    assert await store.get(c.id) is not None
    await asyncio.sleep(0.5)
    assert await store.get(c.id) is None
    assert (await store.list_conversations("alice")).data == []


async def test_lock_serialises_and_times_out_with_409(make_store: Factory) -> None:
    store = await make_store()
    c = await store.create(conversation())
    order: list[str] = []

    async def worker(name: str) -> None:
        async with store.lock(c.id, wait_s=5):
            order.append(f"{name}-in")
            await asyncio.sleep(0.05)
            order.append(f"{name}-out")

    await asyncio.gather(worker("a"), worker("b"))
    assert order in (["a-in", "a-out", "b-in", "b-out"], ["b-in", "b-out", "a-in", "a-out"])
    async with store.lock(c.id, wait_s=1):
        with pytest.raises(ConflictError):
            async with store.lock(c.id, wait_s=0.05):
                pass
    async with store.lock(c.id, wait_s=0):  # released after the error
        pass


async def test_lock_is_shared_between_two_redis_replicas(tmp_path: Path) -> None:
    prefix = f"ragate-test-{secrets.token_hex(4)}"
    a = await RedisConversationStore.from_url(REDIS_URL, prefix=prefix).open()
    b = await RedisConversationStore.from_url(REDIS_URL, prefix=prefix).open()
    try:
        async with a.lock("conv_x", wait_s=1):
            with pytest.raises(ConflictError):
                async with b.lock("conv_x", wait_s=0.1):
                    pass
        async with b.lock("conv_x", wait_s=0.1):
            pass
    finally:
        await a.close()
        await b.close()


async def test_redis_gone_is_a_clear_503() -> None:
    store = RedisConversationStore.from_url("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(StoreUnavailableError, match="unreachable"):
            await store.open()
        with pytest.raises(StoreUnavailableError) as err:
            await store.get("conv_x")
        assert err.value.status_code == 503
    finally:
        await store.close()


async def test_sqlite_locks_are_forgotten_when_nobody_holds_them(tmp_path: Path) -> None:
    store = await SqliteConversationStore(tmp_path / "c.db").open()
    try:
        async def hold() -> None:
            async with store.lock("conv_a", wait_s=5):
                await asyncio.sleep(0.02)

        await asyncio.gather(hold(), hold(), hold())
        with pytest.raises(ConflictError):
            async with store.lock("conv_b", wait_s=5):
                async with store.lock("conv_b", wait_s=0):
                    pass
        assert store._locks == {}
    finally:
        await store.close()
