"""Everything that differs per engine, in one registry: ``KINDS[kind]``.

Each entry says how a kind of backend is probed (health path, whether its ``/metrics``
carry load), how a LoRA adapter is addressed, where it tokenizes, which request
parameters it takes, and how chat messages must be shaped for it. Code elsewhere asks
the registry instead of branching on the kind, so adding an engine is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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


def _messages_as_sent(messages: list[Message]) -> list[Message]:
    return messages


def _messages_for_llamacpp(messages: list[Message]) -> list[Message]:
    """llama-cpp-python answers 500 (not 400) to ``content: null`` beside ``tool_calls``
    and to the ``developer`` role: give it an empty string and ``system``, which its chat
    templates render the same way."""
    out = messages
    for i, message in enumerate(messages):
        fixed = message
        if message.get("role") == "developer":
            fixed = {**fixed, "role": "system"}
        if message.get("content") is None and message.get("role") in ("assistant", "tool"):
            fixed = {**fixed, "content": ""}
        if fixed is not message:
            if out is messages:
                out = list(messages)
            out[i] = fixed
    return out


@dataclass(frozen=True, slots=True)
class Kind:
    """How one kind of backend is spoken to."""

    health_path: str
    scrapes_metrics: bool = False  # its /metrics carry queue length and KV-cache use
    lora_model: Callable[[str, str], str] = _openai_lora
    tokenize: Callable[[str, str], list[TokenizeCall]] | None = None
    strict_params: bool = False  # only OpenAI's own parameters pass (hosted APIs)
    prepare_messages: Callable[[list[Message]], list[Message]] = field(
        default=_messages_as_sent)

    def shape(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The request body this kind gets for ``payload`` (the client's, gateway fields
        removed): unknown parameters dropped for strict APIs, messages in its dialect."""
        allowed = OPENAI_PARAMS.get(path) if self.strict_params else None
        body = {k: v for k, v in payload.items() if allowed is None or k in allowed}
        messages = body.get("messages")
        if isinstance(messages, list):
            body["messages"] = self.prepare_messages(messages)
        return body


KINDS: dict[BackendKind, Kind] = {
    BackendKind.VLLM: Kind(HEALTH_PATHS[Engine.VLLM], scrapes_metrics=True,
                           tokenize=_tokenize_vllm),
    BackendKind.SGLANG: Kind(HEALTH_PATHS[Engine.SGLANG], scrapes_metrics=True,
                             lora_model=_sglang_lora, tokenize=_tokenize_vllm),
    BackendKind.LLAMACPP: Kind(HEALTH_PATHS[Engine.LLAMACPP], tokenize=_tokenize_llamacpp,
                               prepare_messages=_messages_for_llamacpp),
    # a hosted API: /v1/models is what every OpenAI-compatible service answers
    BackendKind.OPENAI: Kind(HEALTH_PATHS[Engine.LLAMACPP], strict_params=True),
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
