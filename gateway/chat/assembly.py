"""Step 4: assembly. The prompt as the backend will see it, in cache-friendly order:

    pinned     system prompt, persona card      (stable for the whole conversation)
    summary    of the turns cut away            (changes only at cut points)
    passages   in ``system`` mode               (change with every question)
    turns      the kept history, oldest first
    new        the newest user message (holding the passages in ``turn`` mode) and what
               follows it

Everything before the first part that changed since the previous request is a prefix the
backend can serve from its cache; putting the parts that change most often last keeps
that prefix long.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.chat.context import Retrieved
from gateway.chat.history import History
from gateway.chat.tokens import message_text
from gateway.settings import ContextMode

Message = dict[str, Any]


@dataclass(frozen=True)
class Prompt:
    pinned: list[Message]
    turns: list[list[Message]]
    new: list[Message]
    passages: list[Message] = field(default_factory=list)
    summary: list[Message] = field(default_factory=list)

    def messages(self, start: int = 0) -> list[Message]:
        """The prompt with the history turns before ``start`` left out."""
        kept = [m for turn in self.turns[start:] for m in turn]
        return [*self.pinned, *self.summary, *self.passages, *kept, *self.new]


def assemble(history: History, retrieved: Retrieved | None) -> Prompt:
    if retrieved is None or not retrieved.passages:
        return Prompt(history.pinned, history.turns, history.new)
    if retrieved.mode is ContextMode.SYSTEM:
        block = {"role": "system", "content": retrieved.block()}
        return Prompt(history.pinned, history.turns, history.new, passages=[block])
    return Prompt(history.pinned, history.turns, _with_passages(history.new, retrieved))


def _with_passages(new: list[Message], retrieved: Retrieved) -> list[Message]:
    """The newest user message rewritten to carry the passages and the question."""
    out = list(new)
    for i in range(len(out) - 1, -1, -1):
        if out[i].get("role") == "user":
            out[i] = {**out[i], "content": retrieved.block(message_text(out[i]))}
            break
    return out
