"""Step 2: where the history comes from, a stored conversation or the request itself.

Either way the result has one shape, so every later step treats both alike:
``pinned`` (system prompt, persona card: never dropped), ``turns`` (earlier turns, oldest
first; a turn is a user message and everything that answered it, never split) and ``new``
(the messages this request adds: the newest user message and what follows it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.conversations.models import Conversation, Item
from gateway.conversations.store import split_turns
from gateway.errors import BadRequestError

Message = dict[str, Any]
PERSONA_PREFIX = "Persona:\n"
SYSTEM_ROLES = ("system", "developer")


@dataclass(frozen=True)
class History:
    pinned: list[Message]
    turns: list[list[Message]]
    new: list[Message]
    conversation: Conversation | None = None  # None for a stateless request


def from_request(messages: list[Message], system_prompt: str | None) -> History:
    """A stateless request: its leading system messages are pinned (else the model's
    system prompt), its last turn is new, the turns before it are the history."""
    lead = 0
    while lead < len(messages) and messages[lead].get("role") in SYSTEM_ROLES:
        lead += 1
    pinned = list(messages[:lead]) or _system(system_prompt)
    turns = split_turns(messages[lead:])
    new = turns.pop() if turns else []
    return History(pinned, turns, new)


def from_conversation(conversation: Conversation, items: list[Item],
                      messages: list[Message], system_prompt: str | None) -> History:
    """A stored conversation: its turns are the history, the request's own system
    messages (if any) replace the stored system prompt for this request, the rest is new."""
    request_system = [m for m in messages if m.get("role") in SYSTEM_ROLES]
    new = [m for m in messages if m.get("role") not in SYSTEM_ROLES]
    if not new:
        raise BadRequestError("a conversation request needs at least one new message",
                              param="messages")
    pinned = request_system or _system(conversation.metadata.get("system") or system_prompt)
    persona = conversation.metadata.get("persona")
    if persona:
        pinned = [*pinned, {"role": "system", "content": PERSONA_PREFIX + persona}]
    turns = split_turns([replayed(i) for i in items])
    return History(pinned, turns, new, conversation)


def replayed(item: Item) -> Message:
    """A stored message as it goes back into a prompt. An interrupted reply is replayed
    with the text the user saw, and without tool calls (their arguments may be cut off,
    and a call no tool answered would make the next prompt invalid)."""
    message = item.message
    if item.status == "interrupted" and message.get("role") == "assistant":
        return {"role": "assistant", "content": message.get("content") or ""}
    return message


def _system(text: str | None) -> list[Message]:
    return [{"role": "system", "content": text}] if text else []
