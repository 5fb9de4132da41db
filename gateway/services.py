"""The shared objects one app owns, built from settings and handed to the routers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from gateway.auth import KeyRing
from gateway.backends import BackendPool, dispatch
from gateway.conversations.service import ConversationService
from gateway.conversations.summary import completion_text
from gateway.knowledge.service import KnowledgeService
from gateway.metrics import Metrics
from gateway.proxy import Proxy
from gateway.routing import RoutingRequest
from gateway.session_hints import LocalSessionHints, SessionHints
from gateway.settings import ModelConfig, Settings, TokenizerSource
from gateway.tokens import (
    BackendTokenizeCounter,
    EstimateCounter,
    HFTokenizerCounter,
    MessageCounter,
    TextCounter,
)


@dataclass
class Services:
    settings: Settings
    keys: KeyRing
    pool: BackendPool
    metrics: Metrics
    proxy: Proxy
    hints: SessionHints = field(default_factory=LocalSessionHints)
    conversations: ConversationService | None = None
    knowledge: KnowledgeService | None = None
    counters: dict[str, MessageCounter] = field(default_factory=dict)

    def model_config(self, name: str) -> ModelConfig:
        found = next((m for m in self.settings.models if m.name == name), None)
        return found or ModelConfig(name=name)  # added at run time: no truncation settings

    async def load_counters(self) -> None:
        """Tokenizers are loaded at start-up, never on a request (HF ones in a thread)."""
        for model in self.settings.models:
            self.counters[model.name] = await self._build_counter(model)

    def counter_for(self, model: str) -> MessageCounter:
        counter = self.counters.get(model)
        if counter is None:
            counter = self.counters[model] = self._wrap(model, EstimateCounter(), 5)
        return counter

    async def _build_counter(self, model: ModelConfig) -> MessageCounter:
        source, path = model.tokenizer.source, model.tokenizer.path
        text: TextCounter
        if source is TokenizerSource.HF or (source is TokenizerSource.AUTO and path):
            if not path:
                raise ValueError(f"model {model.name}: tokenizer source hf needs a path")
            text = await anyio.to_thread.run_sync(HFTokenizerCounter(path).load)
        elif source is TokenizerSource.ESTIMATE:
            text = EstimateCounter()
        else:
            targets = self.pool.route(model.name).targets
            if targets:
                first = targets[0]
                text = BackendTokenizeCounter(first.backend.client, first.backend.kind,
                                              first.request_model)
            else:
                text = EstimateCounter()
        return self._wrap(model.name, text, model.tokenizer.per_message_overhead)

    def _wrap(self, model: str, text: TextCounter, overhead: int) -> MessageCounter:
        fallbacks = self.metrics.token_count_fallbacks.labels(model)
        return MessageCounter(text, per_message_overhead=overhead, on_fallback=fallbacks.inc)

    async def complete(self, model: str, messages: list[dict[str, Any]], max_tokens: int) -> str:
        """One non-streamed chat completion through the pool (used for summaries)."""
        route = self.pool.route(model)
        payload = {"messages": messages, "max_tokens": max_tokens, "temperature": 0}
        reply = await dispatch(route, "/v1/chat/completions", lambda _t: payload, stream=False,
                               request=RoutingRequest(model=model), config=self.settings.pool)
        return completion_text(reply.body)


