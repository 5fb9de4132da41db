"""The conversations CRUD service: what the Conversations API and the chat pipeline ask of
the store, with the owner check in one place.

A conversation belongs to the owner of the key that created it; an admin key sees all.
Someone else's conversation is "not found": its existence is not ours to reveal.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from gateway.auth import Principal
from gateway.conversations.models import Conversation, Item, Page, export_record, new_id, now
from gateway.conversations.store import ConversationStore, Order, split_turns
from gateway.errors import FeatureDisabledError, NotFoundError
from gateway.settings import ConversationsConfig


class ConversationService:
    def __init__(self, store: ConversationStore, config: ConversationsConfig) -> None:
        self.store = store
        self.config = config

    async def create(self, principal: Principal, metadata: dict[str, str],
                     messages: list[dict[str, Any]]) -> Conversation:
        conversation = await self.store.create(Conversation(
            id=new_id("conv"), owner=principal.owner, created_at=now(), metadata=metadata))
        for turn in split_turns(messages):
            await self.store.append_turn(conversation.id, turn)
        return await self.get(principal, conversation.id)

    async def get(self, principal: Principal, conversation_id: str) -> Conversation:
        conversation = await self.store.get(conversation_id)
        if conversation is None or (conversation.owner != principal.owner
                                    and not principal.is_admin):
            raise NotFoundError(f"conversation {conversation_id} not found",
                                param="conversation_id", code="conversation_not_found")
        return conversation

    async def list_page(self, principal: Principal, *, owner: str | None, limit: int,
                   after: str | None, order: Order) -> Page:
        # a chat key lists its own; an admin lists everyone's, or one owner's
        scope = owner if principal.is_admin else principal.owner
        return await self.store.list_conversations(scope, limit=limit, after=after, order=order)

    async def update_metadata(self, principal: Principal, conversation_id: str,
                              metadata: dict[str, str]) -> Conversation:
        await self.get(principal, conversation_id)
        updated = await self.store.update_metadata(conversation_id, metadata)
        if updated is None:
            raise NotFoundError(f"conversation {conversation_id} not found",
                                param="conversation_id", code="conversation_not_found")
        return updated

    async def delete(self, principal: Principal, conversation_id: str) -> None:
        await self.get(principal, conversation_id)
        await self.store.delete(conversation_id)

    async def items_page(self, principal: Principal, conversation_id: str, *, limit: int,
                         after: str | None, order: Order) -> Page:
        await self.get(principal, conversation_id)
        return await self.store.items(conversation_id, limit=limit, after=after, order=order)

    async def items(self, conversation_id: str) -> list[Item]:
        """Every item, oldest first (the caller checked the owner)."""
        return list((await self.store.items(conversation_id)).data)

    async def append(self, principal: Principal, conversation_id: str,
                     messages: list[dict[str, Any]]) -> list[Item]:
        await self.get(principal, conversation_id)
        added: list[Item] = []
        async with self.lock(conversation_id):
            for turn in split_turns(messages):
                added += await self.store.append_turn(conversation_id, turn)
        return added

    async def export(self, principal: Principal, conversation_id: str) -> dict[str, Any]:
        conversation = await self.get(principal, conversation_id)
        return export_record(conversation, await self.items(conversation_id))

    def lock(self, conversation_id: str) -> AbstractAsyncContextManager[None]:
        """Serialises requests on one conversation; 409 after ``lock_wait_s``."""
        return self.store.lock(conversation_id, self.config.lock_wait_s)


def conversation_service(service: ConversationService | None, *, param: str | None = None
                         ) -> ConversationService:
    """The service, or the same 404 on every route when conversations are off."""
    if service is None:
        raise FeatureDisabledError("conversations", "conversations_disabled", param=param)
    return service
