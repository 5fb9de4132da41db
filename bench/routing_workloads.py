"""Seeded chat workloads for the routing benchmark, and their ideal cost on a simulated fleet.

A workload is an endless, seeded sequence of conversation scripts (``Script``): a system
prompt and the turns a user will send. The client keeps the history (user messages and the
assistant's real replies) and sends it whole every turn, as a stateless OpenAI client does.
Scripts are a pure function of (workload, seed, number), so every policy sees the same users.
Text is words drawn from a fixed list; only its tokens matter to the simulator.

- ``multiturn``: many long conversations (6-16 turns, user messages of ~10-250 words, a
  short shared system prompt), so the history grows to a few thousand tokens;
- ``persona``: one hot persona card of ~1,500 tokens as everybody's system prompt, many
  users with short conversations (1-4 turns, short messages);
- ``rag``: three personas (~150/400/800 tokens), conversations of 2-8 turns where 45 % attach
  a retrieved passage block (two chunks from a 400-chunk corpus, Zipf popularity) to the
  newest user message ("turn" placement: the history stays a stable prefix), 30 % append it
  to the system prompt ("system" placement: every turn changes the head of the prompt),
  25 % plain chat. The history keeps the user's plain message, as the gateway's does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from serving.sim import PrefixCache, filler, render_chat, tokenize

WORDS = (
    "ship harbour storm lantern rope compass island tide sail anchor crew captain map treasure "
    "gull wind wave deck mast cargo coast reef fog bell voyage chart star north south trade spice "
    "silk barrel cannon biscuit parrot letter port customs dock invoice freight container "
    "schedule route weather delay berth pilot tugboat manifest insurance claim damage inspection "
    "quay crane warehouse ledger contract clause penalty shipment pallet customs broker tariff "
    "the a of and to in is that for it with as on be at by this from or an are was we can you "
    "your our will which would should could about into over after before under between during "
    "because while where when how what why who please thanks maybe perhaps really quite very"
).split()


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n))


def text_of_tokens(rng: random.Random, tokens: int, lead: str = "") -> str:
    """Sentences of words until the text has about ``tokens`` simulator tokens."""
    parts, count = [lead] if lead else [], len(tokenize(lead))
    while count < tokens:
        sentence = words(rng, rng.randint(8, 20)).capitalize() + "."
        parts.append(sentence)
        count += len(tokenize(" " + sentence))
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Turn:
    user: str
    max_tokens: int
    think_s: float  # the user's pause after the previous reply, before this turn is ready
    context: str | None = None  # a retrieved passage block
    placement: str = "turn"  # "turn": before the question in the user message; "system"


@dataclass(frozen=True, slots=True)
class Script:
    key: str
    system: str
    turns: tuple[Turn, ...]


def request_messages(script: Script, index: int,
                     history: list[dict[str, str]]) -> list[dict[str, str]]:
    """The whole message list of turn ``index``, given the history of the turns before it."""
    turn = script.turns[index]
    system, user = script.system, turn.user
    if turn.context is not None and turn.placement == "system":
        system = f"{system}\n\n# Retrieved context\n{turn.context}"
    elif turn.context is not None:
        user = f"Context:\n{turn.context}\n\nQuestion: {turn.user}"
    return [{"role": "system", "content": system}, *history, {"role": "user", "content": user}]


def _think(rng: random.Random, mean_s: float) -> float:
    return max(0.3, rng.expovariate(1 / mean_s))


def _user(rng: random.Random, median_words: float, lo: int, hi: int) -> str:
    n = min(hi, max(lo, int(rng.lognormvariate(0, 0.6) * median_words)))
    return words(rng, n).capitalize() + "?"


@dataclass(frozen=True)
class Workload:
    name: str
    summary: str
    make: Callable[[random.Random, int], Script]
    seed: int

    def scripts(self) -> Iterator[Script]:
        n = 0
        while True:
            yield self.make(random.Random(f"{self.seed}/{self.name}/{n}"), n)
            n += 1


def multiturn(seed: int, think_s: float = 1.5) -> Workload:
    system = text_of_tokens(random.Random(seed), 60, "You are a careful assistant for a "
                            "shipping company. Answer briefly.")

    def make(rng: random.Random, n: int) -> Script:
        turns = tuple(Turn(_user(rng, 40, 8, 250), rng.randint(32, 96), _think(rng, think_s))
                      for _ in range(rng.randint(6, 16)))
        return Script(f"multiturn-{n}", system, turns)

    return Workload("multiturn", "long multi-turn chats, short shared system prompt", make, seed)


def persona(seed: int, think_s: float = 1.5) -> Workload:
    card = text_of_tokens(random.Random(seed), 1500, "You are Captain Mira Vale, an old sea "
                          "captain who now runs a tavern. Stay in character.")

    def make(rng: random.Random, n: int) -> Script:
        turns = tuple(Turn(_user(rng, 14, 4, 40), rng.randint(24, 64), _think(rng, think_s))
                      for _ in range(rng.choice((1, 1, 2, 2, 3, 4))))
        return Script(f"persona-{n}", card, turns)

    return Workload("persona", "one hot ~1.5k-token persona, many short chats", make, seed)


def rag(seed: int, think_s: float = 1.5) -> Workload:
    shared = random.Random(seed)
    personas = [text_of_tokens(shared, size, f"You are support assistant number {i}.")
                for i, size in enumerate((150, 400, 800))]
    corpus = [text_of_tokens(shared, shared.randint(120, 240), f"[doc {i}]") for i in range(400)]
    popularity = [1 / (i + 1) ** 1.1 for i in range(len(corpus))]

    def make(rng: random.Random, n: int) -> Script:
        kind = rng.choices(("turn", "system", "plain"), weights=(45, 30, 25))[0]
        system = rng.choice(personas)
        turns = []
        for _ in range(rng.randint(2, 8)):
            context = None
            if kind != "plain":
                context = "\n\n".join(rng.choices(corpus, weights=popularity, k=2))
            turns.append(Turn(_user(rng, 20, 6, 80), rng.randint(32, 96), _think(rng, think_s),
                              context, kind))
        return Script(f"rag-{n}", system, tuple(turns))

    return Workload("rag", "RAG passages in the system prompt or the newest turn, 3 personas",
                    make, seed)


WORKLOADS: dict[str, Callable[[int], Workload]] = {
    "multiturn": multiturn, "persona": persona, "rag": rag}


@dataclass(frozen=True)
class IdealCost:
    """Mean tokens per request when every request reuses the longest prefix seen before it."""

    requests: int
    prompt_tokens: float
    uncached_tokens: float
    output_tokens: float

    @property
    def hit_rate(self) -> float:
        return 1 - self.uncached_tokens / self.prompt_tokens

    def saturation_rps(self, replicas: int, max_batch: int, prefill_ms: float,
                       decode_ms: float) -> float:
        """Requests/s at which the fleet's bottleneck is 100 % busy (see bench/routing.py)."""
        prefill_s = self.uncached_tokens * prefill_ms / 1000
        slot_s = prefill_s + (self.output_tokens - 1) * decode_ms / 1000
        return replicas * min(1 / prefill_s, max_batch / slot_s)


def ideal_cost(workload: Workload, conversations: int, block_tokens: int = 16) -> IdealCost:
    """Replay ``conversations`` scripts through one unbounded prefix cache, replies included."""
    cache = PrefixCache(capacity_blocks=1 << 40, block_tokens=block_tokens)
    n = prompt = uncached = output = 0
    for script, _ in zip(workload.scripts(), range(conversations), strict=False):
        history: list[dict[str, Any]] = []
        for i, turn in enumerate(script.turns):
            text = render_chat(request_messages(script, i, history))
            tokens = tokenize(text)
            cached = cache.lookup(tokens)
            reply = filler(text, turn.max_tokens)
            cache.insert(tokens + reply)
            history += [{"role": "user", "content": turn.user},
                        {"role": "assistant", "content": "".join(reply)}]
            n, prompt, uncached = n + 1, prompt + len(tokens), uncached + len(tokens) - cached
            output += turn.max_tokens
    return IdealCost(n, prompt / n, uncached / n, output / n)
