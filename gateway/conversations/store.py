"""The conversation store protocol; SQLite and Redis implement it, one test suite checks both.

Contract:
- ``append_turn`` writes all messages of one turn and the conversation's bookkeeping
  (turn count, last prompt, summary) atomically: all of it or nothing.
- ``lock`` serialises requests on one conversation (across replicas for Redis); it waits
  up to ``wait_s`` and then raises ConflictError (409).
- Reads of an expired conversation behave as if it did not exist.
- Store failures (Redis gone, disk full) raise StoreUnavailableError (503).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

from gateway.conversations.models import (
    Conversation,
    Item,
    ItemStatus,
    Page,
    Summary,
    new_id,
    now,
)

Order = Literal["asc", "desc"]


class ConversationStore(Protocol):
    async def create(self, conversation: Conversation) -> Conversation: ...

    async def get(self, conversation_id: str) -> Conversation | None: ...

    async def list_conversations(
        self, owner: str | None, *, limit: int = 20, after: str | None = None,
        order: Order = "desc",
    ) -> Page: ...

    async def update_metadata(
        self, conversation_id: str, metadata: dict[str, str]
    ) -> Conversation | None: ...

    async def delete(self, conversation_id: str) -> bool: ...

    async def items(
        self, conversation_id: str, *, limit: int | None = None, after: str | None = None,
        order: Order = "asc",
    ) -> Page: ...

    async def append_turn(
        self,
        conversation_id: str,
        messages: Sequence[dict[str, Any]],
        *,
        status: ItemStatus = ItemStatus.COMPLETED,
        last_prompt: Sequence[tuple[str, int]] | None = None,
        summary: Summary | None = None,
    ) -> list[Item]: ...

    def lock(
        self, conversation_id: str, wait_s: float
    ) -> AbstractAsyncContextManager[None]: ...

    async def ping(self) -> None:
        """Raise StoreUnavailableError when the store cannot answer (for /ready)."""
        ...

    async def close(self) -> None: ...


def split_turns(messages: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Group messages into turns: each user message starts one; the rest follow it.

    Messages before the first user message (an assistant greeting) form a turn of their
    own, so a turn is never split and a tool result always stays with its call.
    """
    turns: list[list[dict[str, Any]]] = []
    for message in messages:
        if message.get("role") == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def turn_of_append(conversation_turns: int, messages: Sequence[dict[str, Any]]) -> int:
    """The logical turn an append belongs to: a user message opens a new one; anything
    else (a tool result answering the last turn's tool call) continues the last turn."""
    opens = not messages or messages[0].get("role") == "user" or conversation_turns == 0
    return conversation_turns if opens else conversation_turns - 1


def record_append(
    conversation: Conversation,
    messages: Sequence[dict[str, Any]],
    *,
    first_seq: int,
    status: ItemStatus,
    last_prompt: Sequence[tuple[str, int]] | None,
    summary: Summary | None,
    ttl_s: float | None,
) -> list[Item]:
    """The items of one append, with the conversation's bookkeeping updated in place
    (turn count, times, expiry, last prompt, summary); each store then writes both in one
    transaction."""
    turn, stamp = turn_of_append(conversation.turns, messages), now()
    items = [
        Item(new_id("msg"), conversation.id, first_seq + offset, turn, str(m.get("role")),
             dict(m), stamp, status)
        for offset, m in enumerate(messages)
    ]
    conversation.turns = turn + 1
    conversation.updated_at = stamp
    if ttl_s:
        conversation.expires_at = stamp + ttl_s
    if last_prompt is not None:
        conversation.last_prompt = list(last_prompt)
    if summary is not None:
        conversation.summary = summary
    return items
