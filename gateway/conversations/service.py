"""Chat on a stored conversation: load, assemble, truncate, and commit the turn.

Lifecycle of one request (``begin`` … ``ChatTurn.commit`` / ``ChatTurn.release``):
1. the conversation's lock is taken (serialised across replicas with Redis, 409 after
   ``lock_wait_s``);
2. the prompt is assembled: pinned messages (system prompt, persona card, summary), the
   kept history turns, the new messages; the cut comes from ``truncation.plan``;
3. after the reply finished, the new messages and the reply are appended in one write,
   with the prompt's fingerprint (for the next request's predicted prefix reuse);
4. the lock is released whatever happened. A request that fails or is cut off stores
   nothing: the conversation stays exactly as it was, and the client may resend.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from gateway.auth import Principal
from gateway.conversations.models import Conversation, ItemStatus, Summary, new_id, now
from gateway.conversations.store import ConversationStore, split_turns
from gateway.conversations.summary import Complete, summarize, summary_message
from gateway.errors import BadRequestError, NotFoundError
from gateway.metrics import Metrics
from gateway.settings import ConversationsConfig, ModelConfig
from gateway.tokens import MessageCounter, message_hash
from gateway.truncation import Cut, Strategy, TurnCost, Window, plan

PERSONA_PREFIX = "Persona:\n"


@dataclass
class ChatTurn:
    conversation: Conversation
    new_messages: list[dict[str, Any]]
    prompt: list[dict[str, Any]]
    fingerprint: list[tuple[str, int]]
    reuse_tokens: int
    summary: Summary | None
    store: ConversationStore
    kept_turns: int = 0
    stored_turns: int = 0
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    committed: bool = False

    @property
    def prompt_tokens(self) -> int:
        return sum(n for _, n in self.fingerprint)

    def headers(self) -> dict[str, str]:
        return {
            "x-ragate-conversation-id": self.conversation.id,
            "x-ragate-prefix-reuse": f"{self.reuse_tokens}/{self.prompt_tokens}",
            "x-ragate-history-turns": f"{self.kept_turns}/{self.stored_turns}",
        }

    async def commit(self, reply: dict[str, Any],
                     status: ItemStatus = ItemStatus.COMPLETED) -> None:
        await self.store.append_turn(
            self.conversation.id, [*self.new_messages, reply], status=status,
            last_prompt=self.fingerprint, summary=self.summary,
        )
        self.committed = True

    async def release(self) -> None:
        await self._stack.aclose()


def prefix_reuse(previous: list[tuple[str, int]], current: list[tuple[str, int]]) -> int:
    """Tokens at the start of ``current`` identical to the start of the previous prompt."""
    reused = 0
    for old, new in zip(previous, current, strict=False):
        if old[0] != new[0]:
            break
        reused += new[1]
    return reused


class ConversationService:
    def __init__(self, store: ConversationStore, config: ConversationsConfig,
                 metrics: Metrics) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics

    async def create(self, principal: Principal, metadata: dict[str, str],
                     messages: list[dict[str, Any]]) -> Conversation:
        conversation = await self.store.create(Conversation(
            id=new_id("conv"), owner=principal.owner, created_at=now(), metadata=metadata))
        for turn in split_turns(messages):
            await self.store.append_turn(conversation.id, turn)
        return await self.get(principal, conversation.id)

    async def get(self, principal: Principal, conversation_id: str) -> Conversation:
        conversation = await self.store.get(conversation_id)
        # someone else's conversation is "not found": its existence is not ours to reveal
        if conversation is None or (conversation.owner != principal.owner
                                    and not principal.is_admin):
            raise NotFoundError(f"conversation {conversation_id} not found",
                                param="conversation_id", code="conversation_not_found")
        return conversation

    async def begin(
        self,
        principal: Principal,
        conversation_id: str,
        model: ModelConfig,
        messages: list[dict[str, Any]],
        counter: MessageCounter,
        complete: Complete,
    ) -> ChatTurn:
        await self.get(principal, conversation_id)  # 404 before queueing on the lock
        stack = AsyncExitStack()
        await stack.enter_async_context(self.store.lock(conversation_id, self.config.lock_wait_s))
        try:
            conversation = await self.get(principal, conversation_id)  # fresh, under the lock
            turn = await self._assemble(conversation, model, messages, counter, complete)
        except BaseException:
            await stack.aclose()
            raise
        turn._stack = stack
        return turn

    async def _assemble(
        self,
        conversation: Conversation,
        model: ModelConfig,
        messages: list[dict[str, Any]],
        counter: MessageCounter,
        complete: Complete,
    ) -> ChatTurn:
        request_system = [m for m in messages if m.get("role") in ("system", "developer")]
        new = [m for m in messages if m.get("role") not in ("system", "developer")]
        if not new:
            raise BadRequestError("a conversation request needs at least one new message",
                                  param="messages")
        items = (await self.store.items(conversation.id)).data
        history = split_turns([i.message for i in items])
        pinned = self._pinned(conversation, model, request_system)
        t = model.truncation
        strategy = t.strategy if model.context_window else Strategy.NONE
        flat = [*pinned, *(m for turn in history for m in turn), *new]
        hashes = [message_hash(m) for m in flat]
        counts = await counter.count(flat, hashes)
        n_pinned = len(pinned)
        turn_costs, pos = [], n_pinned
        for turn in history:
            sizes = counts[pos:pos + len(turn)]
            asked = sum(sizes[:-1]) if len(turn) > 1 and turn[-1].get("role") == "assistant" \
                else sum(sizes)
            turn_costs.append(TurnCost(sum(sizes), asked))
            pos += len(turn)
        question = sum(counts[pos:])
        pinned_tokens = sum(counts[:n_pinned])
        if strategy.summarizes:
            pinned_tokens += t.summary_max_tokens + counter.per_message_overhead
        cut = Cut(0, True)
        if model.context_window:
            budget = model.context_window - t.reserve_completion_tokens - t.margin_tokens
            window = Window(max(budget, 1), t.low_water, t.high_water)
            cut = plan(strategy, turn_costs, question, pinned_tokens, window)
            if not cut.fits:
                history_tokens = sum(c.total for c in turn_costs[cut.start:])
                raise BadRequestError(
                    f"the prompt would need {pinned_tokens + history_tokens + question} tokens "
                    f"(pinned {pinned_tokens}, history {history_tokens}, new {question}); the "
                    f"budget "
                    f"is {window.budget} (strategy {strategy})",
                    param="messages", code="context_length_exceeded")
        if cut.start:
            self.metrics.history_dropped_turns.labels(model.name, str(strategy)).observe(
                cut.start)
        summary, summary_msgs = await self._summary(
            conversation, strategy, history, cut, t.summary_max_tokens, complete)
        kept = [m for turn in history[cut.start:] for m in turn]
        prompt = [*pinned, *summary_msgs, *kept, *new]
        kept_counts = counts[n_pinned + sum(len(x) for x in history[:cut.start]):]
        summary_counts = (await counter.count(summary_msgs)) if summary_msgs else []
        fingerprint = [
            *zip(hashes[:n_pinned], counts[:n_pinned], strict=True),
            *((message_hash(m), n) for m, n in zip(summary_msgs, summary_counts, strict=True)),
            *zip(hashes[len(hashes) - len(kept) - len(new):], kept_counts, strict=True),
        ]
        reuse = prefix_reuse(conversation.last_prompt, fingerprint)
        total = sum(n for _, n in fingerprint)
        self.metrics.prompt_tokens_counted.labels(model.name).inc(total)
        self.metrics.predicted_reuse_tokens.labels(model.name).inc(reuse)
        if total:
            self.metrics.predicted_reuse_ratio.labels(model.name).observe(reuse / total)
        return ChatTurn(conversation, new, prompt, fingerprint, reuse,
                        summary if summary != conversation.summary else None, self.store,
                        kept_turns=len(history) - cut.start, stored_turns=len(history))

    def _pinned(self, conversation: Conversation, model: ModelConfig,
                request_system: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if request_system:  # the client's own system message wins for this request
            pinned = list(request_system)
        else:
            system = conversation.metadata.get("system") or model.system_prompt
            pinned = [{"role": "system", "content": system}] if system else []
        persona = conversation.metadata.get("persona")
        if persona:
            pinned.append({"role": "system", "content": PERSONA_PREFIX + persona})
        return pinned

    async def _summary(
        self,
        conversation: Conversation,
        strategy: Strategy,
        history: list[list[dict[str, Any]]],
        cut: Cut,
        max_tokens: int,
        complete: Complete,
    ) -> tuple[Summary | None, list[dict[str, Any]]]:
        """The summary in force: reused as is, or extended at a cut point."""
        current = conversation.summary
        if not strategy.summarizes or cut.start == 0:
            return current, []
        if current is None or current.covers_turns != cut.start:
            covered = current.covers_turns if current and current.covers_turns < cut.start else 0
            previous = current.text if current is not None and covered else None
            dropped = [m for turn in history[covered:cut.start] for m in turn]
            text = await summarize(complete, previous, dropped, max_tokens)
            self.metrics.summaries.labels("ok" if text else "failed").inc()
            if text is None:
                return current, []
            current = Summary(text, cut.start)
        return current, [summary_message(current.text)]
