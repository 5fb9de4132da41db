"""Step 3: retrieval. Search the knowledge base the request may use for its newest user
message; render what passed as one block of passages; describe them as sources.

Where the block goes is assembly's business (``system`` mode: pinned after the system
prompt; ``turn`` mode: inside the newest user message). Its size is bounded twice: by
``max_context_chars`` in the search, and by a token reserve that truncation counts as
pinned, so the cut never depends on what one search returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from gateway.chat.tokens import MessageCounter, message_text
from gateway.knowledge.service import KnowledgeService, knowledge_service
from gateway.settings import ContextMode, KnowledgeUse, ModelConfig

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

    def to_api(self, scores: bool = False) -> list[dict[str, Any]]:
        """``scores``: the dense and lexical scores beside the fused one (search answers
        them; chat replies keep to the fused score)."""
        out = []
        for p in self.passages:
            source = {
                "knowledge_base": self.knowledge_base, "document": p.source, "page": p.page,
                "chunk_id": p.chunk_id, "chunk_ids": list(p.chunk_ids),
                "score": round(p.score, 4), "text": p.text,
            }
            if scores:
                source["dense_score"] = _rounded(p.dense_score)
                source["lexical_score"] = _rounded(p.lexical_score)
            out.append(source)
        return out


def _rounded(score: float | None) -> float | None:
    return None if score is None else round(score, 4)


@dataclass(frozen=True)
class Retrieved:
    """What retrieval hands to assembly: the passages and how to place them."""

    sources: Sources
    mode: ContextMode
    template: str
    reserve_tokens: int  # what truncation sets aside for the passages, found or not

    @property
    def passages(self) -> Sequence[Any]:
        return self.sources.passages

    def block(self, question: str = "") -> str:
        context = render_context(self.passages)
        return self.template.format(context=context, question=question)


def knowledge_use(model: ModelConfig, options: dict[str, Any] | None,
                  conversation: dict[str, str]) -> KnowledgeUse:
    """The request's options over the conversation's knowledge base over the model's."""
    use = model.knowledge
    if conversation.get("knowledge_base"):
        use = use.model_copy(update={"knowledge_base": conversation["knowledge_base"]})
    if options:
        use = use.model_copy(update=options)
    return use


def reserve_tokens(use: KnowledgeUse, budget: int | None) -> int:
    """Tokens set aside for passages: ``max_context_tokens``, else a third of a character
    budget (about three characters a token in English; Chinese runs nearer one), never
    more than a third of the prompt budget."""
    if use.max_context_tokens is not None:
        return use.max_context_tokens
    reserve = -(-use.max_context_chars // 3)
    return min(reserve, budget // 3) if budget else reserve


async def retrieve(knowledge: KnowledgeService | None, use: KnowledgeUse, query: str | None,
                   counter: MessageCounter, *, budget: int | None,
                   system_template: str | None, turn_template: str | None) -> Retrieved:
    """Search, then keep the best passages whose block fits the token reserve."""
    assert use.knowledge_base is not None
    service = knowledge_service(knowledge, param="ragate.knowledge_base")
    passages = [] if not query else await service.search(
        use.knowledge_base, query, top_k=use.top_k, score_threshold=use.score_threshold,
        budget=use.max_context_chars)
    mode = ContextMode(use.mode)
    template = (system_template or SYSTEM_TEMPLATE) if mode is ContextMode.SYSTEM else (
        turn_template or TURN_TEMPLATE)
    reserve = reserve_tokens(use, budget)
    retrieved = Retrieved(Sources(use.knowledge_base, passages), mode, template, reserve)
    # passages come best first: drop from the end until the block (without the question,
    # which is counted as the new message) fits its reserve
    overhead = counter.per_message_overhead
    while retrieved.passages and (
            await counter.count_text(retrieved.block()) + overhead > reserve):
        kept = Sources(use.knowledge_base, retrieved.passages[:-1])
        retrieved = replace(retrieved, sources=kept)
    return retrieved


async def injected(services: Any, model_name: str, sources: Sources, query: str
                   ) -> dict[str, Any]:
    """What a chat request to ``model_name`` would get for ``sources`` (the search
    playground shows it): the block as chat renders it, where it goes, and its tokens."""
    model = services.model_config(model_name)
    config = services.settings.knowledge
    mode = ContextMode(model.knowledge.mode)
    template = (config.system_template or SYSTEM_TEMPLATE) if mode is ContextMode.SYSTEM \
        else (config.turn_template or TURN_TEMPLATE)
    retrieved = Retrieved(sources, mode, template, reserve_tokens(model.knowledge, None))
    text = retrieved.block(query) if sources.passages else ""
    counter = services.counter_for(model_name)
    tokens = await counter.count_text(text) if text else 0
    return {"model": model_name, "mode": mode.value, "text": text, "tokens": tokens,
            "reserve_tokens": retrieved.reserve_tokens}


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
