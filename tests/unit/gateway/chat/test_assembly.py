"""Step 4 alone: the prompt's parts in cache order, with and without passages."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.chat.assembly import assemble
from gateway.chat.context import SYSTEM_TEMPLATE, TURN_TEMPLATE, Retrieved, Sources
from gateway.chat.history import History
from gateway.settings import ContextMode

SYSTEM = {"role": "system", "content": "S"}
TURNS = [[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
         [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]]
NEW = [{"role": "user", "content": "what is the refund window?"}]


@dataclass(frozen=True)
class FakePassage:
    text: str
    source: str = "policy.pdf"
    page: int | None = 2
    chunk_id: str = "ch1"
    chunk_ids: tuple[str, ...] = ("ch1",)
    score: float = 0.9


def retrieved(mode: ContextMode, *texts: str) -> Retrieved:
    template = SYSTEM_TEMPLATE if mode is ContextMode.SYSTEM else TURN_TEMPLATE
    return Retrieved(Sources("kb", [FakePassage(t) for t in texts]), mode, template, 500)


def history() -> History:
    return History([SYSTEM], TURNS, NEW)


def test_without_passages_the_prompt_is_the_history_in_order() -> None:
    prompt = assemble(history(), None)
    assert prompt.messages() == [SYSTEM, *TURNS[0], *TURNS[1], *NEW]
    assert prompt.messages(1) == [SYSTEM, *TURNS[1], *NEW]
    empty = assemble(history(), retrieved(ContextMode.SYSTEM))
    assert empty.messages() == prompt.messages(), "nothing found: nothing injected"


def test_system_mode_pins_the_passages_after_the_system_prompt() -> None:
    prompt = assemble(history(), retrieved(ContextMode.SYSTEM, "Refunds within 30 days."))
    messages = prompt.messages(1)
    assert messages[0] == SYSTEM, "the stable system prompt stays first (cached)"
    assert messages[1]["role"] == "system"
    assert "Refunds within 30 days." in messages[1]["content"]
    assert "(policy.pdf, page 2)" in messages[1]["content"]
    assert messages[2:] == [*TURNS[1], *NEW], "the history and question are untouched"


def test_turn_mode_puts_the_passages_in_the_newest_user_message_only() -> None:
    prompt = assemble(history(), retrieved(ContextMode.TURN, "Refunds within 30 days."))
    messages = prompt.messages()
    assert messages[:-1] == [SYSTEM, *TURNS[0], *TURNS[1]], "the prefix stays cacheable"
    assert "Refunds within 30 days." in messages[-1]["content"]
    assert messages[-1]["content"].endswith("what is the refund window?")
    assert NEW[0]["content"] == "what is the refund window?", "the original is not mutated"


def test_the_summary_sits_between_pinned_and_passages() -> None:
    from dataclasses import replace

    prompt = assemble(history(), retrieved(ContextMode.SYSTEM, "p"))
    prompt = replace(prompt, summary=[{"role": "system", "content": "SUMMARY"}])
    roles = [m["content"][:7] for m in prompt.messages(2)]
    assert roles[:2] == ["S", "SUMMARY"] and prompt.messages(2)[3:] == NEW
