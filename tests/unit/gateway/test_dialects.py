"""Parameter dialects per kind: what is passed, translated, enforced, refused or dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.backends import BackendPool
from gateway.backends.kinds import KINDS, support_table
from gateway.chat.upstream import refuse_unhonoured
from gateway.errors import BadRequestError
from gateway.settings import BackendConfig, BackendKind, ModelConfig, PoolConfig

CHAT = "/v1/chat/completions"
LLAMACPP, OLLAMA, VLLM = KINDS[BackendKind.LLAMACPP], KINDS[BackendKind.OLLAMA], KINDS[
    BackendKind.VLLM]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}},
         {"type": "function", "function": {"name": "get_time", "parameters": {}}}]


def shaped(kind: Any, **payload: Any) -> dict[str, Any]:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], **payload}
    kind.check(CHAT, body)
    return kind.shape(CHAT, body)


def refused(kind: Any, **payload: Any) -> BadRequestError:
    with pytest.raises(BadRequestError) as err:
        shaped(kind, **payload)
    return err.value


def test_max_completion_tokens_becomes_max_tokens_where_only_that_is_known() -> None:
    assert shaped(LLAMACPP, max_completion_tokens=5)["max_tokens"] == 5
    assert "max_completion_tokens" not in shaped(LLAMACPP, max_completion_tokens=5)
    assert shaped(OLLAMA, max_completion_tokens=9, max_tokens=4)["max_tokens"] == 4
    assert shaped(LLAMACPP, max_completion_tokens=3, max_tokens=40)["max_tokens"] == 3
    assert shaped(VLLM, max_completion_tokens=5) == {
        "model": "m", "messages": [{"role": "user", "content": "q"}],
        "max_completion_tokens": 5}


def test_values_an_engine_cannot_honour_are_a_400_naming_the_parameter() -> None:
    error = refused(LLAMACPP, n=2)
    assert (error.status_code, error.param, error.code) == (400, "n", "unsupported_value")
    assert "llamacpp" in error.message
    assert refused(OLLAMA, tool_choice={"type": "function",
                                        "function": {"name": "get_weather"}}).param == (
        "tool_choice")
    assert refused(OLLAMA, logit_bias={"42": 5}).param == "logit_bias"
    assert refused(LLAMACPP, tools=TOOLS, tool_choice="required").param == "tool_choice"
    assert shaped(VLLM, n=3)["n"] == 3
    assert shaped(LLAMACPP, n=1)["n"] == 1


def test_json_schema_becomes_llama_cpps_json_object_with_a_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert shaped(LLAMACPP, response_format=fmt)["response_format"] == {
        "type": "json_object", "schema": schema}
    assert shaped(VLLM, response_format=fmt)["response_format"] == fmt
    assert shaped(LLAMACPP, response_format={"type": "json_object"})["response_format"] == {
        "type": "json_object"}


def test_tool_choice_required_with_one_tool_is_that_tool_by_name() -> None:
    body = shaped(LLAMACPP, tools=TOOLS[:1], tool_choice="required")
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    ollama = shaped(OLLAMA, tools=TOOLS, tool_choice="none")
    assert "tools" not in ollama and "tool_choice" not in ollama
    assert shaped(OLLAMA, tools=TOOLS, tool_choice="auto")["tools"] == TOOLS


def test_parallel_tool_calls_is_kept_by_the_gateway_where_engines_ignore_it() -> None:
    assert "parallel_tool_calls" not in shaped(LLAMACPP, parallel_tool_calls=False)
    assert "parallel_tool_calls" not in shaped(VLLM, parallel_tool_calls=False)
    sglang = KINDS[BackendKind.SGLANG]
    assert shaped(sglang, parallel_tool_calls=False)["parallel_tool_calls"] is False


def test_engine_extras_pass_to_open_engines_and_are_dropped_and_named_for_others() -> None:
    assert shaped(VLLM, top_k=5, min_p=0.1)["top_k"] == 5
    assert shaped(LLAMACPP, repetition_penalty=1.2)["repeat_penalty"] == 1.2
    body = {"model": "m", "messages": [], "top_k": 5, "min_p": 0.1, "seed": 3}
    assert OLLAMA.dropped(CHAT, body) == ["min_p", "top_k"]
    assert OLLAMA.shape(CHAT, body) == {"model": "m", "messages": [], "seed": 3}
    assert VLLM.dropped(CHAT, body) == []


def test_content_parts_are_joined_for_llama_cpp_and_images_refused() -> None:
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    body = shaped(LLAMACPP, messages=[{"role": "user", "content": parts}])
    assert body["messages"][0]["content"] == "one\ntwo"
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]
    error = refused(LLAMACPP, messages=[{"role": "user", "content": image}])
    assert error.param == "messages[0].content" and "image_url" in error.message
    assert shaped(VLLM, messages=[{"role": "user", "content": parts}])["messages"][0][
        "content"] == parts


def test_a_mixed_group_refuses_what_any_of_its_backends_would_not_honour() -> None:
    model = ModelConfig(name="m", backends=[
        BackendConfig(url="http://gpu:8000", kind=BackendKind.VLLM),
        BackendConfig(url="http://cpu:8001", kind=BackendKind.LLAMACPP)])
    pool = BackendPool(PoolConfig(), [model])
    route = pool.route("m")
    refuse_unhonoured(route, CHAT, {"n": 1})
    with pytest.raises(BadRequestError):
        refuse_unhonoured(route, CHAT, {"n": 2})


def test_the_readme_table_is_the_registry() -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    assert support_table() in readme


def test_logprobs_reach_llama_cpp_in_the_form_it_answers() -> None:
    assert shaped(LLAMACPP, logprobs=True)["top_logprobs"] == 1
    assert shaped(LLAMACPP, logprobs=True, top_logprobs=3)["top_logprobs"] == 3
    assert "top_logprobs" not in shaped(VLLM, logprobs=True)
