"""Conversation records: a conversation, its items, and turns (the unit we never split)."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def now() -> float:
    return time.time()


class ItemStatus(StrEnum):
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class Item:
    """One stored chat message. ``turn`` groups a user message with what answered it."""

    id: str
    conversation_id: str
    seq: int
    turn: int
    role: str
    message: dict[str, Any]  # the OpenAI chat message as sent/received (role, content, tool_calls…)
    created_at: float
    status: ItemStatus = ItemStatus.COMPLETED

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "conversation.item", "type": "message",
            "role": self.role, "turn": self.turn, "status": str(self.status),
            "created_at": int(self.created_at), **{
                k: v for k, v in self.message.items() if k != "role"
            },
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Item:
        return cls(**{**data, "status": ItemStatus(data.get("status", "completed"))})


@dataclass(frozen=True, slots=True)
class Summary:
    """A pinned summary of turns ``[0, covers_turns)``; replaced only at cut points."""

    text: str
    covers_turns: int


@dataclass(slots=True)
class Conversation:
    id: str
    owner: str
    created_at: float
    metadata: dict[str, str] = field(default_factory=dict)
    updated_at: float = 0.0
    turns: int = 0
    summary: Summary | None = None
    expires_at: float | None = None
    # token counts (hash, tokens) of the messages of the last prompt sent: the reference
    # for the predicted prefix reuse of the next request
    last_prompt: list[tuple[str, int]] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "conversation", "created_at": int(self.created_at),
            "updated_at": int(self.updated_at or self.created_at), "metadata": self.metadata,
            "turns": self.turns, "owner": self.owner,
            "summary": None if self.summary is None else {
                "text": self.summary.text, "covers_turns": self.summary.covers_turns},
            "expires_at": None if self.expires_at is None else int(self.expires_at),
        }

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["last_prompt"] = [list(p) for p in self.last_prompt]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conversation:
        summary = data.get("summary")
        return cls(
            id=data["id"], owner=data["owner"], created_at=data["created_at"],
            metadata=dict(data.get("metadata") or {}), updated_at=data.get("updated_at", 0.0),
            turns=data.get("turns", 0),
            summary=Summary(**summary) if summary else None,
            expires_at=data.get("expires_at"),
            last_prompt=[(h, int(n)) for h, n in data.get("last_prompt") or []],
        )


def export_record(conversation: Conversation, items: list[Item]) -> dict[str, Any]:
    """A conversation with all its items, as the API and the CLI export it."""
    return {**conversation.to_api(), "object": "conversation.export",
            "items": [i.to_api() for i in items]}


@dataclass(frozen=True, slots=True)
class Page:
    data: list[Any]
    has_more: bool

    def to_api(self) -> dict[str, Any]:
        items = [d.to_api() for d in self.data]
        return {
            "object": "list", "data": items, "has_more": self.has_more,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
        }
