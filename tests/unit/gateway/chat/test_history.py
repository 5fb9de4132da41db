"""Step 2 alone: stored and stateless histories come out in one shape."""

from __future__ import annotations

from gateway.chat.history import PERSONA_PREFIX, from_conversation, from_request
from gateway.conversations.models import Conversation, Item, ItemStatus


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def test_stateless_leading_system_messages_are_pinned_and_the_last_turn_is_new() -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "developer", "content": "D"},
                user("a"), bot("b"), user("c")]
    history = from_request(messages, system_prompt="ignored: the client sent its own")
    assert history.pinned == messages[:2]
    assert history.turns == [[user("a"), bot("b")]]
    assert history.new == [user("c")]
    assert history.conversation is None


def test_stateless_without_system_message_gets_the_models_system_prompt() -> None:
    history = from_request([user("a")], system_prompt="Be kind.")
    assert history.pinned == [{"role": "system", "content": "Be kind."}]
    assert from_request([user("a")], system_prompt=None).pinned == []


def test_a_tool_result_stays_new_with_the_call_it_answers() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [user("q0"), bot("a0"), user("weather?"),
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    history = from_request(messages, None)
    assert history.turns == [[user("q0"), bot("a0")]]
    assert [m["role"] for m in history.new] == ["user", "assistant", "tool"]


def test_a_system_message_inside_the_history_stays_in_its_turn() -> None:
    messages = [user("a"), {"role": "system", "content": "note"}, bot("b"), user("c")]
    history = from_request(messages, None)
    assert history.pinned == []
    assert history.turns == [messages[:3]]


def item(seq: int, message: dict, status: ItemStatus = ItemStatus.COMPLETED) -> Item:
    return Item(f"msg_{seq}", "conv_1", seq, seq // 2, message["role"], message, 0.0, status)


def test_stored_history_pins_system_and_persona_and_replays_interrupted_text_only() -> None:
    conversation = Conversation("conv_1", "me", 0.0, metadata={"persona": "A pirate."})
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a"}}
    items = [item(0, user("a")), item(1, bot("b")),
             item(2, user("c"), ItemStatus.INTERRUPTED),
             item(3, {"role": "assistant", "content": "half", "tool_calls": [call]},
                  ItemStatus.INTERRUPTED)]
    history = from_conversation(conversation, items, [user("d")], system_prompt="S")
    assert history.pinned == [{"role": "system", "content": "S"},
                              {"role": "system", "content": PERSONA_PREFIX + "A pirate."}]
    assert history.turns == [[user("a"), bot("b")], [user("c"), bot("half")]], \
        "an interrupted reply is replayed as the text the user saw, without its cut-off call"
    assert history.new == [user("d")]
    assert history.conversation is conversation


def test_a_request_system_message_replaces_the_stored_one_for_that_request() -> None:
    conversation = Conversation("conv_1", "me", 0.0, metadata={"system": "stored"})
    history = from_conversation(conversation, [], [{"role": "system", "content": "mine"},
                                                   user("x")], system_prompt="model")
    assert history.pinned == [{"role": "system", "content": "mine"}]
    assert history.new == [user("x")]
