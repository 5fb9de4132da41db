"""The shared objects one app owns, built from settings and handed to the routers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from gateway.auth import KeyRing
from gateway.backends import BackendPool
from gateway.backends.registry import BackendRegistry
from gateway.chat.tokens import (
    BackendTokenizeCounter,
    EstimateCounter,
    HFTokenizerCounter,
    MessageCounter,
    TextCounter,
)
from gateway.context import RequestContext
from gateway.conversations.service import ConversationService
from gateway.knowledge.service import KnowledgeService
from gateway.metrics import Metrics
from gateway.session_hints import LocalSessionHints, SessionHints
from gateway.settings import ModelConfig, Settings, TokenizerSource
from gateway.tenants.accounting import Tenancy

if TYPE_CHECKING:
    from gateway.chat.pipeline import ChatPipeline


@dataclass
class Services:
    settings: Settings
    keys: KeyRing
    pool: BackendPool
    metrics: Metrics
    hints: SessionHints = field(default_factory=LocalSessionHints)
    conversations: ConversationService | None = None
    knowledge: KnowledgeService | None = None
    counters: dict[str, MessageCounter] = field(default_factory=dict)
    chat_pipeline: ChatPipeline | None = None
    tenancy: Tenancy | None = None
    registry: BackendRegistry | None = None

    def finish(self, ctx: RequestContext) -> None:
        """A request is over (the middleware calls this): settle its limits, record usage,
        note the answering backend's time to first token."""
        if ctx.ttft_s is not None and ctx.backend:
            backend = self.pool.backends.get(ctx.backend)
            if backend is not None:
                backend.observe_ttft(ctx.ttft_s)
        if self.tenancy is not None:
            self.tenancy.finish(ctx)

    @property
    def chat(self) -> ChatPipeline:
        assert self.chat_pipeline is not None, "built in the app's lifespan"
        return self.chat_pipeline

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
            first = next((t for t in self.pool.route(model.name).targets
                          if t.backend.dialect.tokenize is not None), None)
            text = EstimateCounter() if first is None else BackendTokenizeCounter(
                first.backend.client, first.backend.dialect, first.request_model)
        return self._wrap(model.name, text, model.tokenizer.per_message_overhead)

    def _wrap(self, model: str, text: TextCounter, overhead: int) -> MessageCounter:
        fallbacks = self.metrics.token_count_fallbacks.labels(model)
        return MessageCounter(text, per_message_overhead=overhead, on_fallback=fallbacks.inc)
