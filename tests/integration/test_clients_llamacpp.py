"""The clients people use, unchanged, against real llama.cpp through the gateway: the
openai SDK and langchain-openai's ChatOpenAI. Each parameter either works as OpenAI
defines it or is refused with a 400 naming it; a length limit always holds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.integration.conftest import GatewayProcess, start_llama_servers

pytestmark = pytest.mark.integration

STORY = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]
# about 26 tokens from SmolLM2: past a limit of 6, and short enough that an engine which
# ignores the limit does not hold the one-threaded server (and its health probe) for long
HELLO = [{"role": "user", "content": "Say hi"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """One llama.cpp server behind two models: ``smollm2`` as what it is, and ``deaf``,
    the same server declared as vLLM, so the length limit reaches it as
    ``max_completion_tokens``, which llama-cpp-python ignores: an engine that ignores the
    limit, for the gateway's own enforcement."""
    server = start_llama_servers(1)[0]
    workdir: Path = tmp_path_factory.mktemp("clients")
    upstream = {"url": server.url, "model": "smollm2-upstream"}
    config = {
        "local_backends": [], "server": {"data_dir": str(workdir / "data")},
        "pool": {"health_interval_s": 1}, "knowledge": {"enabled": False},
        "models": [
            {"name": "smollm2", "backends": [{**upstream, "kind": "llamacpp"}]},
            {"name": "deaf", "backends": [{**upstream, "kind": "vllm", "name": "as-vllm",
                                           "health_path": "/v1/models"}]},
        ],
    }
    gw = GatewayProcess(config, workdir).start()
    try:
        yield gw
    finally:
        gw.stop()
        server.stop()


@pytest.fixture(scope="module")
def sdk(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0,
                         timeout=180)


def chat_model(gateway: GatewayProcess, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(base_url=gateway.url + "/v1", api_key="unused",  # type: ignore[arg-type]
                      model="smollm2", temperature=0, max_retries=0, timeout=180, **kwargs)


# -- the openai SDK --------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["max_tokens", "max_completion_tokens"])
def test_both_length_limits_hold(sdk: openai.OpenAI, limit: str) -> None:
    reply = sdk.chat.completions.create(model="smollm2", messages=STORY,  # type: ignore
                                        temperature=0, **{limit: 5})
    assert reply.usage is not None and reply.usage.completion_tokens <= 5
    assert reply.choices[0].finish_reason == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_an_engine_that_ignores_the_limit_is_stopped_by_the_gateway(
        sdk: openai.OpenAI, stream: bool) -> None:
    if not stream:
        reply = sdk.chat.completions.create(model="deaf", messages=HELLO,  # type: ignore
                                            temperature=0, max_completion_tokens=6)
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage is not None and reply.usage.completion_tokens <= 6
        return
    chunks = list(sdk.chat.completions.create(
        model="deaf", messages=HELLO, temperature=0, max_completion_tokens=6,  # type: ignore
        stream=True, stream_options={"include_usage": True}))
    texts = [c.choices[0].delta.content for c in chunks if c.choices and
             c.choices[0].delta.content]
    assert 0 < len(texts) <= 6, "at most one token per chunk reached the client"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 6


def test_developer_role_and_content_parts_are_rendered(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(model="smollm2", max_tokens=8, messages=[
        {"role": "developer", "content": "Answer in one word."},
        {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}])
    assert reply.choices[0].message.content


def test_json_object_and_json_schema_replies_parse(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(
        model="smollm2", max_tokens=60, temperature=0,
        messages=[{"role": "user", "content": "Give a JSON object about Paris."}],
        response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)
    schema = {"type": "object", "properties": {"age": {"type": "integer"}},
              "required": ["age"], "additionalProperties": False}
    reply = sdk.chat.completions.create(
        model="smollm2", max_tokens=30, temperature=0,
        messages=[{"role": "user", "content": "How old is a ten-year-old?"}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "age", "schema": schema, "strict": True}})
    assert isinstance(json.loads(reply.choices[0].message.content or "")["age"], int)


def test_a_tool_call_round_trip(sdk: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = sdk.chat.completions.create(model="smollm2", messages=messages, max_tokens=40,
                                        tools=[WEATHER], tool_choice="required")
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = (choice.message.tool_calls or [])[0]
    assert call.id and call.type == "function" and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}]
    answer = sdk.chat.completions.create(model="smollm2", messages=messages, max_tokens=20,
                                         tools=[WEATHER])
    assert answer.choices[0].message.content


def test_a_stream_with_include_usage_ends_with_openais_usage_chunk(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(
        model="smollm2", messages=STORY, max_tokens=6, stream=True,
        stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.system_fingerprint is None for c in chunks), "never invented"


def test_logprobs_come_back_and_what_cannot_be_honoured_is_refused(sdk: openai.OpenAI) -> None:
    reply = sdk.chat.completions.create(model="smollm2", messages=STORY, max_tokens=3,
                                        logprobs=True)
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and len(logprobs.content or []) == 3
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="smollm2", messages=STORY, max_tokens=3, n=2)
    assert err.value.body["param"] == "n"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        sdk.chat.completions.create(model="smollm2", messages=STORY, tools=[WEATHER],
                                    tool_choice={"type": "function",
                                                 "function": {"name": "nope"}})
    assert "nope" in str(err.value)


# -- langchain-openai --------------------------------------------------------------------


def test_chat_openai_invoke_keeps_its_max_tokens(gateway: GatewayProcess) -> None:
    # ChatOpenAI(max_tokens=...) sends max_completion_tokens
    message = chat_model(gateway, max_tokens=12).invoke("Tell me about the sea.")
    assert message.content
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] <= 12
    assert message.response_metadata["finish_reason"] in ("stop", "length")


def test_chat_openai_stream_usage(gateway: GatewayProcess) -> None:
    chunks = list(chat_model(gateway, max_tokens=8, stream_usage=True).stream("Hello!"))
    total: AIMessageChunk = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk  # type: ignore[assignment]
    assert total.content
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] > 0


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def test_chat_openai_bind_tools(gateway: GatewayProcess) -> None:
    bound = chat_model(gateway, max_tokens=40).bind_tools([get_weather],
                                                          tool_choice="get_weather")
    message = bound.invoke("What is the weather in Paris?")
    assert message.tool_calls and message.tool_calls[0]["name"] == "get_weather"  # type: ignore[attr-defined]
    assert message.tool_calls[0]["id"]  # type: ignore[attr-defined]


class Age(BaseModel):
    age: int


def test_chat_openai_with_structured_output(gateway: GatewayProcess) -> None:
    structured = chat_model(gateway, max_tokens=30).with_structured_output(
        Age, method="json_schema")
    result = structured.invoke("How old is a ten-year-old?")
    assert isinstance(result, Age)
