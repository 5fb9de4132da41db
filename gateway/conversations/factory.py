"""Open the configured conversation store."""

from __future__ import annotations

from gateway.conversations.redis import RedisConversationStore
from gateway.conversations.sqlite import SqliteConversationStore
from gateway.conversations.store import ConversationStore
from gateway.settings import Settings, StoreKind


async def open_store(settings: Settings) -> ConversationStore:
    config = settings.conversations
    if config.store is StoreKind.REDIS:
        return await RedisConversationStore.from_url(
            config.redis_url, prefix=config.key_prefix, ttl_s=config.ttl_s,
            max_turns=config.max_turns, lock_ttl_s=config.lock_ttl_s,
        ).open()
    return await SqliteConversationStore(
        settings.sqlite_path, ttl_s=config.ttl_s, max_turns=config.max_turns
    ).open()
