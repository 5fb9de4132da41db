"""Everything that differs per engine, in one registry: ``KINDS[kind]``.

Each entry says how a kind of backend is probed (health path, whether its ``/metrics``
carry load), how a LoRA adapter is addressed, where it tokenizes, which request
parameters it takes, and how chat messages must be shaped for it. Code elsewhere asks
the registry instead of branching on the kind, so adding an engine is one entry here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.backends.params import (
    PASSED,
    Body,
    MessageRule,
    Rule,
    Treatment,
    apply_message_rules,
    enforced,
    refusal,
    refused_unless,
    renamed,
)
from gateway.errors import BadRequestError
from gateway.settings import BackendKind
from serving import HEALTH_PATHS, Engine

Message = dict[str, Any]

# Parameters of OpenAI's own API; a strict hosted backend (kind `openai`) gets only these.
OPENAI_CHAT_PARAMS = frozenset({
    "model", "messages", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs",
    "max_tokens", "max_completion_tokens", "n", "presence_penalty", "response_format", "seed",
    "stop", "stream", "stream_options", "temperature", "top_p", "tools", "tool_choice",
    "parallel_tool_calls", "user", "metadata", "store", "reasoning_effort", "modalities",
    "prediction", "service_tier",
})
OPENAI_COMPLETION_PARAMS = frozenset({
    "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs",
    "max_tokens", "n", "presence_penalty", "seed", "stop", "stream", "stream_options",
    "suffix", "temperature", "top_p", "user",
})
OPENAI_PARAMS = {"/v1/chat/completions": OPENAI_CHAT_PARAMS,
                 "/v1/completions": OPENAI_COMPLETION_PARAMS}


@dataclass(frozen=True, slots=True)
class TokenizeCall:
    """One way to ask a backend for a token count: ``path`` with ``body``."""

    path: str
    body: dict[str, Any]


def _openai_lora(upstream: str, lora: str) -> str:
    return lora  # vLLM (and llama.cpp aliases) serve an adapter under its own name


def _sglang_lora(upstream: str, lora: str) -> str:
    return f"{upstream}:{lora}"  # SGLang's base:adapter syntax


def _tokenize_vllm(model: str, text: str) -> list[TokenizeCall]:
    return [TokenizeCall("/tokenize", {"model": model, "prompt": text,
                                       "add_special_tokens": False})]


def _tokenize_llamacpp(model: str, text: str) -> list[TokenizeCall]:
    # llama-cpp-python first; llama.cpp's own llama-server answers the second
    return [TokenizeCall("/extras/tokenize/count", {"input": text}),
            TokenizeCall("/tokenize", {"content": text})]


# -- messages ---------------------------------------------------------------------------


def _developer_as_system(message: Message, _: int) -> Message:
    if message.get("role") == "developer":
        return {**message, "role": "system"}
    return message


def _null_content_as_empty(message: Message, _: int) -> Message:
    # llama-cpp-python answers 500 (not 400) to content null beside tool_calls
    if message.get("content") is None and message.get("role") in ("assistant", "tool"):
        return {**message, "content": ""}
    return message


def _text_parts_joined(message: Message, index: int) -> Message:
    """llama-cpp-python renders only string content; text parts are joined as vLLM joins
    them (newlines), and an image it cannot see is refused, not dropped."""
    content = message.get("content")
    if not isinstance(content, list):
        return message
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            raise BadRequestError(
                f"messages[{index}].content[{j}]: this model's backend (llamacpp) takes "
                f"text parts only, not {kind or 'this part'}", code="unsupported_value",
                param=f"messages[{index}].content")
        texts.append(part["text"])
    return {**message, "content": "\n".join(texts)}


DEVELOPER_AS_SYSTEM = MessageRule("role: developer", Treatment.TRANSLATED, "sent as system",
                                  _developer_as_system)
NULL_CONTENT_AS_EMPTY = MessageRule("content: null beside tool_calls", Treatment.TRANSLATED,
                                    'sent as ""', _null_content_as_empty)
TEXT_PARTS_JOINED = MessageRule("content: list of parts", Treatment.TRANSLATED,
                                "text parts joined; image parts refused", _text_parts_joined)


# -- parameters -------------------------------------------------------------------------


def _one(value: Any, _: Mapping[str, Any]) -> bool:
    return value is None or value == 1


def _schema_as_json_object(body: Body, name: str, value: Any) -> None:
    # llama-cpp-python knows json_object with an optional schema (it compiles a grammar)
    if isinstance(value, dict) and value.get("type") == "json_schema":
        schema = (value.get("json_schema") or {}).get("schema")
        body[name] = {"type": "json_object", **({"schema": schema} if schema else {})}


def _required_with_one_tool(value: Any, body: Mapping[str, Any]) -> bool:
    return value != "required" or len(body.get("tools") or []) == 1


def _required_as_named(body: Body, name: str, value: Any) -> None:
    # "required" with a single tool means calling that tool, which llama-cpp-python does
    # (a grammar from its parameters); with several it cannot choose among them
    if value == "required":
        function = body["tools"][0].get("function") or {}
        body[name] = {"type": "function", "function": {"name": function.get("name")}}


def _logprobs_with_top(body: Body, name: str, value: Any) -> None:
    # llama-cpp-python returns no logprobs at all unless top_logprobs is at least 1
    if value and not body.get("top_logprobs"):
        body["top_logprobs"] = 1


def _choice_without_named(value: Any, _: Mapping[str, Any]) -> bool:
    return value in (None, "auto", "none")


def _none_without_tools(body: Body, name: str, value: Any) -> None:
    # Ollama takes no tool_choice: "none" is honoured by not offering the tools
    body.pop(name, None)
    if value == "none":
        body.pop("tools", None)


def _no_logprobs(value: Any, _: Mapping[str, Any]) -> bool:
    return not value


def _empty(value: Any, _: Mapping[str, Any]) -> bool:
    return not value


LENGTH_NOTE = "the gateway stops at it too"
LLAMACPP_PARAMS: dict[str, Rule] = {
    "max_tokens": Rule(Treatment.PASSED, LENGTH_NOTE),
    "max_completion_tokens": renamed("max_tokens", f"sent as max_tokens; {LENGTH_NOTE}"),
    "n": refused_unless(_one, "n > 1 is not supported", "n > 1; 1 passed"),
    "response_format": Rule(Treatment.TRANSLATED, "json_schema sent as json_object with its "
                            "schema (a grammar)", rewrite=_schema_as_json_object),
    "tool_choice": refused_unless(
        _required_with_one_tool, "tool_choice 'required' needs exactly one tool",
        "required with several tools; with one, sent as that tool by name; auto parses calls "
        "only under a function-calling chat_format", rewrite=_required_as_named),
    "parallel_tool_calls": enforced("false keeps the first tool call"),
    "logprobs": Rule(Treatment.TRANSLATED, "true without top_logprobs sent with "
                     "top_logprobs 1", rewrite=_logprobs_with_top),
    # llama-cpp-python ignores it (the gateway counts usage); llama-server honours it
    "stream_options": Rule(Treatment.ENFORCED, "include_usage: counted by the gateway when "
                           "the server sends none"),
    "repetition_penalty": renamed("repeat_penalty"),
    # a GBNF grammar it cannot parse kills llama-cpp-python 0.3.36's server process (tried
    # here): one client would take the backend from everyone; response_format's JSON
    # schema gives the same constraint through a grammar the server builds itself
    "grammar": refused_unless(lambda v, _: v is None, "a raw grammar can crash the server; "
                              "use response_format json_schema", "always"),
}
OLLAMA_PARAMS: dict[str, Rule] = {
    "max_tokens": Rule(Treatment.PASSED, LENGTH_NOTE),
    "max_completion_tokens": renamed("max_tokens", f"sent as max_tokens; {LENGTH_NOTE}"),
    "n": refused_unless(_one, "n > 1 is not supported", "n > 1; 1 passed"),
    "tool_choice": refused_unless(
        _choice_without_named, "only tool_choice auto or none is supported",
        "required or named; none sent as no tools", rewrite=_none_without_tools),
    "parallel_tool_calls": enforced("false keeps the first tool call"),
    "logit_bias": refused_unless(_empty, "logit_bias is not supported", "non-empty"),
    "logprobs": refused_unless(_no_logprobs, "logprobs are not supported", "true"),
    "top_logprobs": refused_unless(lambda v, body: not v or not body.get("logprobs"),
                                   "logprobs are not supported", "with logprobs"),
}
OPEN_ENGINE_PARAMS: dict[str, Rule] = {
    "max_tokens": Rule(Treatment.PASSED, LENGTH_NOTE),
    "max_completion_tokens": Rule(Treatment.PASSED, LENGTH_NOTE),
}
# vLLM takes parallel_tool_calls and ignores it (it logs so)
VLLM_PARAMS: dict[str, Rule] = {
    **OPEN_ENGINE_PARAMS, "parallel_tool_calls": enforced("false keeps the first tool call"),
}


def _never(status: int, message: str) -> bool:
    return False


# llama-cpp-python answers 500 to requests it could not take: pydantic's validation dump,
# ValueErrors raised on the request's values, chat-template errors on its messages
_LLAMACPP_CLIENT_FAULTS = re.compile(
    r"validation error|not found in tools|exceed context window|can only concatenate|"
    r"TemplateError|UndefinedError|jinja|invalid literal for int|could not convert string|"
    r"logprobs is not supported|is not supported for", re.IGNORECASE)


def _llamacpp_client_fault(status: int, message: str) -> bool:
    return status == 500 and bool(_LLAMACPP_CLIENT_FAULTS.search(message))


@dataclass(frozen=True, slots=True, eq=False)
class Kind:
    """How one kind of backend is spoken to."""

    name: str
    health_path: str
    scrapes_metrics: bool = False  # its /metrics carry queue length and KV-cache use
    lora_model: Callable[[str, str], str] = _openai_lora
    tokenize: Callable[[str, str], list[TokenizeCall]] | None = None
    params: Mapping[str, Rule] = field(default_factory=dict)  # unlisted OpenAI ones pass
    extras: Treatment = Treatment.PASSED  # parameters that are not OpenAI's
    messages: tuple[MessageRule, ...] = ()
    # a 5xx the request caused (the engine's way of saying 400): not retried, not counted
    # against the backend's breaker, answered as the client's error
    client_fault: Callable[[int, str], bool] = _never

    def rule(self, path: str, name: str) -> Rule:
        """What this kind does with parameter ``name`` on ``path``."""
        if name in self.params:
            return self.params[name]
        if self.extras is Treatment.DROPPED and name not in OPENAI_PARAMS.get(path, ()):
            return Rule(Treatment.DROPPED)
        return PASSED

    def check(self, path: str, payload: Mapping[str, Any]) -> None:
        """400 naming the first parameter this kind cannot honour with the value sent."""
        for name, value in payload.items():
            rule = self.params.get(name)
            if rule is not None and rule.refuse is not None:
                why = rule.refuse(value, payload)
                if why is not None:
                    raise refusal(name, why, self.name)

    def dropped(self, path: str, payload: Mapping[str, Any]) -> list[str]:
        """The client's parameters this kind does not get (named in a response header)."""
        if self.extras is not Treatment.DROPPED:
            return []
        allowed = OPENAI_PARAMS.get(path, frozenset())
        return sorted(k for k in payload if k not in allowed and k not in self.params)

    def shape(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The request body this kind gets for ``payload`` (the client's, gateway fields
        removed, already checked): rewritten, dropped and messages in its dialect."""
        body = dict(payload)
        for name in self.dropped(path, payload):
            del body[name]
        for name, value in payload.items():
            rule = self.params.get(name)
            if rule is not None and rule.rewrite is not None:
                rule.rewrite(body, name, value)
        messages = body.get("messages")
        if isinstance(messages, list):
            body["messages"] = apply_message_rules(self.messages, messages)
        return body


KINDS: dict[BackendKind, Kind] = {
    BackendKind.VLLM: Kind("vllm", HEALTH_PATHS[Engine.VLLM], scrapes_metrics=True,
                           tokenize=_tokenize_vllm, params=VLLM_PARAMS,
                           messages=(DEVELOPER_AS_SYSTEM,)),
    BackendKind.SGLANG: Kind("sglang", HEALTH_PATHS[Engine.SGLANG], scrapes_metrics=True,
                             lora_model=_sglang_lora, tokenize=_tokenize_vllm,
                             params=OPEN_ENGINE_PARAMS, messages=(DEVELOPER_AS_SYSTEM,)),
    BackendKind.LLAMACPP: Kind("llamacpp", HEALTH_PATHS[Engine.LLAMACPP],
                               tokenize=_tokenize_llamacpp, params=LLAMACPP_PARAMS,
                               messages=(DEVELOPER_AS_SYSTEM, NULL_CONTENT_AS_EMPTY,
                                         TEXT_PARTS_JOINED),
                               client_fault=_llamacpp_client_fault),
    BackendKind.OLLAMA: Kind("ollama", HEALTH_PATHS[Engine.OLLAMA], params=OLLAMA_PARAMS,
                             extras=Treatment.DROPPED, messages=(DEVELOPER_AS_SYSTEM,)),
    # a hosted API: /v1/models is what every OpenAI-compatible service answers
    BackendKind.OPENAI: Kind("openai", HEALTH_PATHS[Engine.LLAMACPP], params=OPEN_ENGINE_PARAMS,
                             extras=Treatment.DROPPED),
}


def check_tool_messages(messages: list[Message]) -> None:
    """Tool messages every engine can render: each ``tool`` message answers a call that an
    earlier assistant message made. A broken sequence is the client's mistake: 400 naming
    the message, never a backend's 500."""
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        role = message.get("role")
        if role == "assistant":
            for call in message.get("tool_calls") or []:
                if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
                    raise BadRequestError(f"messages[{i}].tool_calls: each call needs a "
                                          "function", param=f"messages[{i}].tool_calls")
                if isinstance(call.get("id"), str):
                    open_calls.add(call["id"])
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                raise BadRequestError(f"messages[{i}]: a tool message needs tool_call_id",
                                      param=f"messages[{i}].tool_call_id")
            if call_id not in open_calls:
                raise BadRequestError(
                    f"messages[{i}]: tool_call_id {call_id!r} answers no earlier tool call",
                    param=f"messages[{i}].tool_call_id")


# -- the README's table -----------------------------------------------------------------

TABLE_PARAMS = ("max_tokens", "max_completion_tokens", "stop", "response_format", "seed",
                "n", "logprobs", "top_logprobs", "tool_choice", "parallel_tool_calls",
                "logit_bias", "stream_options", "grammar", "repetition_penalty", "top_k")


def support_table() -> str:
    """Parameter × kind → treatment, as Markdown (the README holds this exact table; a
    test keeps the two equal). ``repetition_penalty`` and ``top_k`` stand for the
    engines' own sampling parameters."""
    kinds = list(KINDS.values())
    lines = ["| parameter | " + " | ".join(k.name for k in kinds) + " |",
             "|---|" + "---|" * len(kinds)]
    for name in TABLE_PARAMS:
        cells = [k.rule("/v1/chat/completions", name).cell() for k in kinds]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    rows = {rule.row for k in kinds for rule in k.messages}
    for row in sorted(rows):
        cells = [next((r.cell() for r in k.messages if r.row == row), "passed") for k in kinds]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
