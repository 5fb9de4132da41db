"""The chat pipeline: one chat request from the validated body to the relayed reply.

    resolve    the model's route and settings; the stored conversation, if any
    begin      the conversation's turn (its lock), stored requests only
    history    pinned + earlier turns + new messages (``history``)
    retrieve   passages for the newest user message, when a knowledge base is in use
    assemble   the prompt in cache order, the passages in place (``assembly``)
    truncate   the stepped cut over the messages, passages reserved (``truncation``)
    route      a backend by policy, retried before the first byte (``upstream``)
    relay      JSON or SSE to the client, usage always (``relay``)
    persist    commit the turn, or record it interrupted; release it on every path

Stored and stateless requests take the same path; the only difference is where the
history comes from and whether a turn is persisted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from starlette.responses import Response

from gateway.auth import Principal
from gateway.backends import BackendPool, ModelRoute
from gateway.backends.kinds import check_tool_messages
from gateway.chat import history as histories
from gateway.chat.assembly import Prompt, assemble
from gateway.chat.context import Retrieved, knowledge_use, latest_user_text, retrieve
from gateway.chat.limits import ReplyLimits, with_length_limit
from gateway.chat.relay import RelayHooks, relay_json, relay_stream
from gateway.chat.reuse import RecentPrompts, prefix_reuse
from gateway.chat.summary import Complete, summary_at, summary_message
from gateway.chat.tokens import MessageCounter, message_hash
from gateway.chat.truncation import Reserved, Strategy, fit, strategy_for, window_of
from gateway.chat.turn import Turn, begin_turn
from gateway.chat.upstream import (
    Upstream,
    backend_payload,
    dropped_header,
    refuse_unhonoured,
    routing_request,
)
from gateway.chat.usage import Usage
from gateway.context import RequestContext
from gateway.conversations.models import Summary
from gateway.conversations.service import ConversationService, conversation_service
from gateway.knowledge.service import KnowledgeService
from gateway.metrics import Metrics
from gateway.schemas import ChatCompletionRequest, CompletionRequest
from gateway.settings import KnowledgeConfig, ModelConfig
from gateway.tenants.accounting import Tenancy
from gateway.tenants.grants import check_knowledge_base, model_route

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"


@dataclass(frozen=True)
class Planned:
    """What truncation decided, and the prompt as it will be sent."""

    messages: list[dict[str, Any]]
    kept_turns: int
    dropped_messages: int
    summary: Summary | None
    fingerprint: list[tuple[str, int]] | None  # None when nothing was counted


class ChatPipeline:
    def __init__(
        self,
        *,
        pool: BackendPool,
        model_config: Callable[[str], ModelConfig],
        counter_for: Callable[[str], MessageCounter],
        upstream: Upstream,
        metrics: Metrics,
        conversations: ConversationService | None,
        knowledge: KnowledgeService | None,
        knowledge_config: KnowledgeConfig,
        summarizer: Callable[[str], Complete],
        recent: RecentPrompts | None = None,
        tenancy: Tenancy | None = None,
    ) -> None:
        self.pool = pool
        self.model_config = model_config
        self.counter_for = counter_for
        self.upstream = upstream
        self.metrics = metrics
        self.conversations = conversations
        self.knowledge = knowledge
        self.knowledge_config = knowledge_config
        self.summarizer = summarizer
        self.recent = recent or RecentPrompts()
        self.tenancy = tenancy

    # -- chat completions -------------------------------------------------------------------

    async def chat(self, ctx: RequestContext, principal: Principal, data: dict[str, Any],
                   body: ChatCompletionRequest, headers: Mapping[str, str]) -> Response:
        """``data`` is the client's JSON, ``body`` its validated view."""
        route = model_route(self.pool, principal, body.model)
        ctx.model = route.name  # named in the log and metrics even if refused before routing
        model = self.model_config(body.model)
        conversation_id = body.conversation_id or headers.get("x-conversation-id")
        turn = await self._begin(principal, conversation_id) if conversation_id else None
        try:
            return await self._run(ctx, principal, route, model, data, body, headers, turn)
        except BaseException:
            if turn is not None:
                await turn.release()
            raise

    async def _begin(self, principal: Principal, conversation_id: str) -> Turn:
        service = conversation_service(self.conversations, param="conversation_id")
        return await begin_turn(service, principal, conversation_id)

    async def _run(self, ctx: RequestContext, principal: Principal, route: ModelRoute,
                   model: ModelConfig,
                   data: dict[str, Any], body: ChatCompletionRequest,
                   headers: Mapping[str, str], turn: Turn | None) -> Response:
        history = (
            histories.from_request(data["messages"], model.system_prompt) if turn is None
            else histories.from_conversation(turn.conversation, turn.items, data["messages"],
                                             model.system_prompt))
        counter = self.counter_for(model.name)
        strategy = strategy_for(model, stored=turn is not None)
        retrieved = await self._retrieve(principal, model, body, history, counter, strategy)
        prompt = assemble(history, retrieved)
        planned = await self._truncate(prompt, history, model, counter, strategy, retrieved)
        check_tool_messages(planned.messages)
        out_headers = self._describe(ctx, model, history, planned, retrieved)
        if turn is not None:
            turn.prepare(history.new, planned.fingerprint or [], planned.summary)
            out_headers["x-ragate-conversation-id"] = turn.conversation.id
            ctx.extra["conversation_id"] = turn.conversation.id

        # sticky routing keys on the stored conversation, else a stateless client's own
        # session (X-Session-Id, or OpenAI's `user` field)
        session = (turn.conversation.id if turn is not None else None) or headers.get(
            "x-session-id") or body.user
        routing = await routing_request(route, self.upstream.hints, ctx, session,
                                        planned.messages)
        payload = backend_payload(data, messages=planned.messages)

        async def prompt_tokens() -> int:  # counted only for keys with limits
            if not counter.exact:
                # a budget reserves what the prompt may really cost: an estimate could be
                # short, and concurrent requests would each overspend by the difference
                return counter.upper_bound(planned.messages)
            if planned.fingerprint is not None:
                return sum(n for _, n in planned.fingerprint)
            return sum(await counter.count(planned.messages))

        refuse_unhonoured(route, CHAT_PATH, payload)  # before a limit counts the request
        limits = await self._admit(ctx, principal, data, out_headers, payload, prompt_tokens,
                                   body.n or 1)
        reply = await self.upstream.send(ctx, route, CHAT_PATH, payload, routing)
        out_headers["x-ragate-backend"] = reply.backend.name
        out_headers.update(dropped_header(reply, CHAT_PATH, payload))

        completed = self._on_complete(model, counter, planned, turn)
        hooks = RelayHooks(
            count_usage=self._usage_counter(counter, planned),
            on_complete=completed,
            on_usage=lambda: self.upstream.feedback(route, ctx),
            extras={"sources": retrieved.sources.to_api()} if retrieved is not None else None,
            limits=limits, count_text=counter.count_text, choices=body.n or 1,
        )
        if not body.stream:
            response, message = await relay_json(ctx, reply, self.metrics, hooks, out_headers)
            if completed is not None:
                await completed(message)
            if turn is not None:
                await turn.release()
            return response
        if turn is not None:
            hooks.on_interrupt, hooks.on_close = turn.interrupt, turn.release
        wants_usage = bool(body.stream_options and body.stream_options.include_usage)
        return relay_stream(ctx, reply, self.metrics, hooks, out_headers,
                            client_wants_usage=wants_usage)

    async def _admit(self, ctx: RequestContext, principal: Principal, data: dict[str, Any],
                     headers: dict[str, str], payload: dict[str, Any],
                     prompt_tokens: Callable[[], Awaitable[int]], choices: int) -> ReplyLimits:
        """The key's and team's limits: 429 over one of them; else the limits the reply
        keeps, a budget's cap among them (sent to the engine too). ``choices`` replies
        (the client's n) are reserved for: each gets its share of the cap."""
        limits = ReplyLimits.of(data)
        if self.tenancy is None or not principal.limited:
            return limits
        wanted = None if limits.max_tokens is None else limits.max_tokens * choices
        admission = await self.tenancy.admit(ctx, principal, await prompt_tokens(), wanted)
        if admission is None:
            return limits
        headers.update(admission.headers)
        if admission.cap is not None:
            each = max(1, admission.cap // choices)
            if limits.max_tokens is None or each < limits.max_tokens:
                limits = replace(limits, max_tokens=each)
                with_length_limit(payload, each)
        return limits

    async def _retrieve(self, principal: Principal, model: ModelConfig,
                        body: ChatCompletionRequest, history: histories.History,
                        counter: MessageCounter, strategy: Strategy | None
                        ) -> Retrieved | None:
        options = body.ragate.model_dump(exclude_none=True) if body.ragate else None
        metadata = history.conversation.metadata if history.conversation else {}
        use = knowledge_use(model, options, metadata)
        if not use.knowledge_base:
            return None
        check_knowledge_base(principal, use.knowledge_base, (model.knowledge.knowledge_base,))
        budget = window_of(model).budget if strategy is not None else None
        config = self.knowledge_config
        return await retrieve(self.knowledge, use, latest_user_text(history.new), counter,
                              budget=budget, system_template=config.system_template,
                              turn_template=config.turn_template)

    async def _truncate(self, prompt: Prompt, history: histories.History,
                        model: ModelConfig, counter: MessageCounter,
                        strategy: Strategy | None, retrieved: Retrieved | None) -> Planned:
        """Cut the history (the passages' share is reserved, never counted from this
        search), write the summary at a cut point, and fingerprint what will be sent."""
        stored = history.conversation is not None
        if strategy is None and not stored:  # nothing to cut or predict: count nothing
            return Planned(prompt.messages(), len(prompt.turns), 0, None, None)
        start, summary = 0, history.conversation.summary if history.conversation else None
        if strategy is not None:
            t = model.truncation
            summarizes = stored and strategy.summarizes
            reserved = Reserved(
                summary=(t.summary_max_tokens + counter.per_message_overhead) if summarizes
                else 0,
                passages=retrieved.reserve_tokens if retrieved is not None else 0)
            cut = await fit(history.pinned, history.turns, history.new, counter, strategy,
                            window_of(model), reserved)
            start = cut.start
            if start:
                self.metrics.history_dropped_turns.labels(model.name, str(strategy)).observe(
                    start)
            if summarizes:
                summary, outcome = await summary_at(
                    summary, history.turns, start, t.summary_max_tokens,
                    self.summarizer(t.summary_model or model.name))
                if outcome != "reused":
                    self.metrics.summaries.labels(outcome).inc()
                if start and summary is not None:
                    prompt = replace(prompt, summary=[summary_message(summary.text)])
        messages = prompt.messages(start)
        counts = await counter.count(messages)
        fingerprint = [(message_hash(m), n) for m, n in zip(messages, counts, strict=True)]
        dropped = sum(len(turn) for turn in prompt.turns[:start])
        return Planned(messages, len(prompt.turns) - start, dropped, summary, fingerprint)

    def _describe(self, ctx: RequestContext, model: ModelConfig, history: histories.History,
                  planned: Planned, retrieved: Retrieved | None) -> dict[str, str]:
        """Response headers and log fields: what was kept, what the backend may reuse."""
        out = {"x-ragate-history-turns": f"{planned.kept_turns}/{len(history.turns)}",
               "x-ragate-dropped-messages": str(planned.dropped_messages)}
        ctx.extra["dropped_messages"] = planned.dropped_messages
        if retrieved is not None:
            ctx.extra.update(knowledge_base=retrieved.sources.knowledge_base,
                             passages=len(retrieved.passages))
        if planned.fingerprint is None:
            return out
        if history.conversation is not None:
            reuse = prefix_reuse(history.conversation.last_prompt, planned.fingerprint)
        else:
            reuse = self.recent.reuse_and_remember(model.name, planned.fingerprint)
        total = sum(n for _, n in planned.fingerprint)
        self.metrics.prompt_tokens_counted.labels(model.name).inc(total)
        self.metrics.predicted_reuse_tokens.labels(model.name).inc(reuse)
        if total:
            self.metrics.predicted_reuse_ratio.labels(model.name).observe(reuse / total)
        ctx.extra.update(prefix_reuse=reuse, counted_prompt_tokens=total)
        out["x-ragate-prefix-reuse"] = f"{reuse}/{total}"
        return out

    def _on_complete(self, model: ModelConfig, counter: MessageCounter, planned: Planned,
                     turn: Turn | None) -> Callable[[dict[str, Any]], Awaitable[None]] | None:
        """Persist a finished reply: the prompt followed by the reply becomes the reference
        for the next request's predicted reuse (backends cache what they generated).
        None when there is nothing to keep (stateless, nothing counted)."""
        if planned.fingerprint is None and turn is None:
            return None
        async def completed(message: dict[str, Any]) -> None:
            if planned.fingerprint is not None:
                entry = (message_hash(message), (await counter.count([message]))[0])
                reference = [*planned.fingerprint, entry]
                if turn is None:
                    self.recent.remember(model.name, reference)
                else:
                    turn.fingerprint = reference
            if turn is not None:
                await turn.commit(message)
        return completed

    @staticmethod
    def _usage_counter(counter: MessageCounter, planned: Planned) -> Callable[..., Any]:
        async def count(reply_text: str) -> Usage:
            if planned.fingerprint is not None:
                prompt = sum(n for _, n in planned.fingerprint)
            else:
                prompt = sum(await counter.count(planned.messages))
            return Usage(prompt, await counter.count_text(reply_text), "counted")
        return count

    # -- legacy completions -----------------------------------------------------------------

    async def completion(self, ctx: RequestContext, principal: Principal,
                         data: dict[str, Any], body: CompletionRequest) -> Response:
        route = model_route(self.pool, principal, body.model)
        ctx.model = route.name
        counter = self.counter_for(body.model)
        routing = await routing_request(route, self.upstream.hints, ctx, body.user, None)
        payload = backend_payload(data)
        out_headers: dict[str, str] = {}

        async def prompt_tokens() -> int:
            total = 0
            for item in _prompts(body.prompt):
                total += len(item) if isinstance(item, list) else await counter.count_text(item)
            return total

        choices = (body.n or 1) * len(_prompts(body.prompt))
        refuse_unhonoured(route, COMPLETIONS_PATH, payload)
        limits = await self._admit(ctx, principal, data, out_headers, payload, prompt_tokens,
                                   choices)
        reply = await self.upstream.send(ctx, route, COMPLETIONS_PATH, payload, routing)

        async def count(reply_text: str) -> Usage:
            return Usage(await prompt_tokens(), await counter.count_text(reply_text), "counted")

        hooks = RelayHooks(count_usage=count, limits=limits,
                           count_text=counter.count_text, choices=choices)
        out_headers.update({"x-ragate-backend": reply.backend.name,
                            **dropped_header(reply, COMPLETIONS_PATH, payload)})
        if not body.stream:
            response, _ = await relay_json(ctx, reply, self.metrics, hooks, out_headers)
            return response
        wants_usage = bool(body.stream_options and body.stream_options.include_usage)
        return relay_stream(ctx, reply, self.metrics, hooks, out_headers,
                            client_wants_usage=wants_usage)


def _prompts(prompt: str | list[Any]) -> list[str | list[int]]:
    """A legacy prompt as a list of prompts, each a text or a list of token ids."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(t, int) for t in prompt):
        return [prompt]
    return list(prompt)
