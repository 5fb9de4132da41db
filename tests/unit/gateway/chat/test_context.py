"""Step 3 alone: which knowledge base a request uses, and what of a search fits."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.chat.context import knowledge_use, reserve_tokens, retrieve
from gateway.chat.tokens import EstimateCounter, MessageCounter
from gateway.errors import NotFoundError
from gateway.settings import ContextMode, KnowledgeUse, ModelConfig
from tests.unit.gateway.chat.test_assembly import FakePassage


class FakeKnowledge:
    def __init__(self, passages: list[FakePassage]) -> None:
        self.passages = passages
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    async def search(self, name: str, query: str, **options: Any) -> list[FakePassage]:
        self.calls.append((name, query, options))
        return list(self.passages)


def test_request_options_win_over_the_conversation_over_the_model() -> None:
    model = ModelConfig(name="m", knowledge=KnowledgeUse(knowledge_base="model-kb", top_k=2))
    assert knowledge_use(model, None, {}).knowledge_base == "model-kb"
    assert knowledge_use(model, None, {"knowledge_base": "conv-kb"}).knowledge_base == "conv-kb"
    use = knowledge_use(model, {"knowledge_base": "req-kb", "mode": "system"},
                        {"knowledge_base": "conv-kb"})
    assert (use.knowledge_base, use.mode, use.top_k) == ("req-kb", ContextMode.SYSTEM, 2)


def test_the_passage_reserve() -> None:
    assert reserve_tokens(KnowledgeUse(max_context_chars=2400), None) == 800
    assert reserve_tokens(KnowledgeUse(max_context_chars=2400), 900) == 300
    assert reserve_tokens(KnowledgeUse(max_context_tokens=123), 900) == 123


async def test_retrieval_keeps_the_best_passages_that_fit_the_reserve() -> None:
    knowledge = FakeKnowledge([FakePassage("short fact " * 10),
                               FakePassage("a much longer passage " * 40)])
    use = KnowledgeUse(knowledge_base="kb", max_context_tokens=120, top_k=3,
                       score_threshold=0.2)
    counter = MessageCounter(EstimateCounter())
    found = await retrieve(knowledge, use, "what?", counter, budget=None,  # type: ignore[arg-type]
                           system_template=None, turn_template=None)
    assert [p.text[:5] for p in found.passages] == ["short"], "the second would not fit"
    assert await counter.count_text(found.block()) + counter.per_message_overhead <= 120
    assert found.reserve_tokens == 120 and found.sources.knowledge_base == "kb"
    assert knowledge.calls == [("kb", "what?", {"top_k": 3, "score_threshold": 0.2,
                                                "budget": 2400})]


async def test_no_question_searches_nothing_and_disabled_knowledge_is_a_404() -> None:
    knowledge = FakeKnowledge([FakePassage("x")])
    counter = MessageCounter(EstimateCounter())
    use = KnowledgeUse(knowledge_base="kb")
    found = await retrieve(knowledge, use, None, counter, budget=None,  # type: ignore[arg-type]
                           system_template=None, turn_template=None)
    assert list(found.passages) == [] and knowledge.calls == []
    with pytest.raises(NotFoundError) as err:
        await retrieve(None, use, "q", counter, budget=None, system_template=None,
                       turn_template=None)
    assert err.value.code == "knowledge_disabled" and err.value.status_code == 404
