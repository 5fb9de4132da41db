"""Put retrieved passages into the prompt, and describe them as sources for the client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.settings import ContextMode
from gateway.tokens import message_text

SYSTEM_TEMPLATE = (
    "Use the following passages from the knowledge base to answer. If they do not help, "
    "ignore them and answer from what you know; do not invent sources.\n"
    "请参考以下知识库段落回答；如果段落与问题无关，请忽略它们，不要编造出处。\n\n{context}"
)
TURN_TEMPLATE = (
    "Passages from the knowledge base (use them if they help, ignore them otherwise; "
    "如果段落无关请忽略):\n\n{context}\n\nQuestion / 问题: {question}"
)


@dataclass(frozen=True, slots=True)
class Sources:
    knowledge_base: str
    passages: Sequence[Any]  # rag.Passage

    def to_api(self) -> list[dict[str, Any]]:
        return [{
            "knowledge_base": self.knowledge_base, "document": p.source, "page": p.page,
            "chunk_id": p.chunk_id, "chunk_ids": list(p.chunk_ids), "score": round(p.score, 4),
            "text": p.text,
        } for p in self.passages]


def render_context(passages: Sequence[Any]) -> str:
    blocks = []
    for i, p in enumerate(passages, start=1):
        where = p.source + (f", page {p.page}" if p.page else "")
        blocks.append(f"[{i}] ({where})\n{p.text.strip()}")
    return "\n\n".join(blocks)


def latest_user_text(messages: Sequence[dict[str, Any]]) -> str | None:
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return None


def inject_context(
    messages: list[dict[str, Any]],
    passages: Sequence[Any],
    mode: ContextMode,
    *,
    system_template: str | None = None,
    turn_template: str | None = None,
) -> list[dict[str, Any]]:
    """A new message list with the passages in the system prompt or the newest user turn."""
    if not passages:
        return messages
    context = render_context(passages)
    out = list(messages)
    if mode is ContextMode.SYSTEM:
        block = (system_template or SYSTEM_TEMPLATE).format(context=context)
        first = out[0] if out else None
        if first is not None and first.get("role") == "system" and isinstance(
                first.get("content"), str):
            out[0] = {**first, "content": f"{first['content']}\n\n{block}"}
        else:
            out.insert(0, {"role": "system", "content": block})
        return out
    for i in range(len(out) - 1, -1, -1):
        if out[i].get("role") == "user":
            question = message_text(out[i])
            text = (turn_template or TURN_TEMPLATE).format(context=context, question=question)
            out[i] = {**out[i], "content": text}
            break
    return out
