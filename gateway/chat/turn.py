"""A request's turn on a stored conversation: begin, then commit or interrupt, then release.

    begin      take the conversation's lock (shared across replicas with Redis; 409 after
               ``lock_wait_s``), then read the conversation and its items under the lock
    prepare    what will be appended: the request's new messages, the fingerprint of the
               prompt actually sent, the summary in force
    commit     the reply finished: append the new messages and the reply in one write
    interrupt  the reply was cut off (client gone, backend failed mid-stream): append the
               new messages and the partial reply, both marked ``interrupted``
    release    free the lock; idempotent, run on every path

A request that fails before any reply began (validation, no backend, a backend's error)
appends nothing: the conversation stays as it was and the client may resend.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from gateway.auth import Principal
from gateway.conversations.models import Conversation, Item, ItemStatus, Summary
from gateway.conversations.service import ConversationService

Message = dict[str, Any]


@dataclass
class Turn:
    service: ConversationService
    conversation: Conversation
    items: list[Item]
    new: list[Message] = field(default_factory=list)
    fingerprint: list[tuple[str, int]] = field(default_factory=list)
    summary: Summary | None = None  # set only when it changed with this turn
    ended: bool = False  # committed or interrupted: nothing more to append
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    def prepare(self, new: list[Message], fingerprint: list[tuple[str, int]],
                summary: Summary | None) -> None:
        self.new, self.fingerprint = new, fingerprint
        self.summary = summary if summary != self.conversation.summary else None

    async def commit(self, reply: Message) -> None:
        await self._append(reply, ItemStatus.COMPLETED)

    async def interrupt(self, partial: Message) -> None:
        await self._append(partial, ItemStatus.INTERRUPTED)

    async def release(self) -> None:
        await self._stack.aclose()

    async def _append(self, reply: Message, status: ItemStatus) -> None:
        if self.ended or not self.new:
            return
        self.ended = True
        await self.service.store.append_turn(
            self.conversation.id, [*self.new, reply], status=status,
            last_prompt=self.fingerprint, summary=self.summary)


async def begin_turn(service: ConversationService, principal: Principal,
                     conversation_id: str) -> Turn:
    await service.get(principal, conversation_id)  # 404 before queueing on the lock
    stack = AsyncExitStack()
    await stack.enter_async_context(service.lock(conversation_id))
    try:
        conversation = await service.get(principal, conversation_id)  # fresh, under the lock
        items = await service.items(conversation_id)
    except BaseException:
        await stack.aclose()
        raise
    return Turn(service, conversation, items, _stack=stack)
