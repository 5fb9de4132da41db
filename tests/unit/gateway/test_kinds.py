"""The backend-kinds registry: health, LoRA names, parameters and message dialects."""

from __future__ import annotations

import pytest

from gateway.backends.kinds import KINDS, check_tool_messages
from gateway.errors import BadRequestError
from gateway.settings import BackendKind
from serving import HEALTH_PATHS, Engine

CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def test_every_kind_is_registered_with_servings_health_paths() -> None:
    assert set(KINDS) == set(BackendKind)
    assert KINDS[BackendKind.VLLM].health_path == HEALTH_PATHS[Engine.VLLM]
    assert KINDS[BackendKind.SGLANG].health_path == HEALTH_PATHS[Engine.SGLANG]
    assert KINDS[BackendKind.LLAMACPP].health_path == HEALTH_PATHS[Engine.LLAMACPP]
    assert KINDS[BackendKind.VLLM].scrapes_metrics
    assert not KINDS[BackendKind.LLAMACPP].scrapes_metrics


def test_lora_addressing_per_kind() -> None:
    assert KINDS[BackendKind.VLLM].lora_model("Qwen/Qwen2.5-7B", "sql") == "sql"
    assert KINDS[BackendKind.SGLANG].lora_model("Qwen/Qwen2.5-7B", "sql") == "Qwen/Qwen2.5-7B:sql"


def test_strict_kind_drops_non_openai_parameters_per_route() -> None:
    payload = {"messages": [], "top_k": 5, "seed": 1, "suffix": "x"}
    assert KINDS[BackendKind.OPENAI].shape("/v1/chat/completions", payload) == {
        "messages": [], "seed": 1}
    assert KINDS[BackendKind.OPENAI].shape("/v1/completions", payload) == {
        "seed": 1, "suffix": "x"}
    assert KINDS[BackendKind.VLLM].shape("/v1/chat/completions", payload) == payload


def test_llamacpp_dialect_takes_tool_turns_and_developer_messages() -> None:
    messages = [{"role": "developer", "content": "Be brief."},
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    shaped = KINDS[BackendKind.LLAMACPP].shape("/v1/chat/completions", {"messages": messages})
    assert shaped["messages"][0]["role"] == "system"
    assert shaped["messages"][2] == {"role": "assistant", "content": "", "tool_calls": [CALL]}
    assert messages[2]["content"] is None, "the client's messages are not mutated"
    vllm = KINDS[BackendKind.VLLM].shape("/v1/chat/completions", {"messages": messages})
    assert vllm["messages"][2] is messages[2], "engines that take null content get it as sent"
    openai = KINDS[BackendKind.OPENAI].shape("/v1/chat/completions", {"messages": messages})
    assert openai["messages"] is messages, "OpenAI itself takes the developer role"


def test_broken_tool_sequences_are_a_400_naming_the_message() -> None:
    check_tool_messages([{"role": "assistant", "tool_calls": [CALL]},
                         {"role": "tool", "tool_call_id": "c1", "content": "x"}])
    with pytest.raises(BadRequestError) as err:
        check_tool_messages([{"role": "user", "content": "q"},
                             {"role": "tool", "tool_call_id": "nope", "content": "x"}])
    assert err.value.param == "messages[1].tool_call_id"
    with pytest.raises(BadRequestError) as err:
        check_tool_messages([{"role": "tool", "content": "x"}])
    assert err.value.param == "messages[0].tool_call_id"
    with pytest.raises(BadRequestError) as err:
        check_tool_messages([{"role": "assistant", "tool_calls": [{"id": "c"}]}])
    assert err.value.param == "messages[0].tool_calls"
