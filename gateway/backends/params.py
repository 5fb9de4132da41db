"""What a kind of backend does with each request parameter, as data the registry holds.

Every parameter an OpenAI client sends gets, per kind, one treatment:

    passed      the engine takes it as OpenAI defines it
    translated  rewritten into the engine's own form (max_completion_tokens -> max_tokens)
    enforced    the engine would ignore it, so the gateway does it to the reply
    refused     the value cannot be honoured: 400 naming the parameter, before any backend
                is called (a client must never get less than it asked for without knowing)
    dropped     not OpenAI's, and the kind is a strict hosted API; named in a header

A ``Rule`` carries its treatment (for the README table and the tests), an optional
``refuse`` that says why a value cannot be honoured, and an optional ``rewrite`` of the
body. Messages get ``MessageRule``s the same way (the ``developer`` role, content parts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.errors import BadRequestError

Body = dict[str, Any]
Message = dict[str, Any]


class Treatment(StrEnum):
    PASSED = "passed"
    TRANSLATED = "translated"
    ENFORCED = "enforced"
    REFUSED = "refused"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class Rule:
    """One kind's handling of one parameter. ``refuse(value, body)`` returns why the value
    cannot be honoured (None when it can); ``rewrite(body, name, value)`` edits the body
    copy the backend gets."""

    treatment: Treatment
    note: str = ""
    refuse: Callable[[Any, Mapping[str, Any]], str | None] | None = None
    rewrite: Callable[[Body, str, Any], None] | None = None

    def cell(self) -> str:
        return f"{self.treatment} ({self.note})" if self.note else str(self.treatment)


PASSED = Rule(Treatment.PASSED)


def _drop(body: Body, name: str, _: Any) -> None:
    body.pop(name, None)


def renamed(target: str, note: str | None = None) -> Rule:
    """Sent under ``target``; if the client sent both, the smaller limit wins (both are
    length limits wherever this is used, and the client asked for at most either)."""
    def rewrite(body: Body, name: str, value: Any) -> None:
        body.pop(name, None)
        other = body.get(target)
        both = isinstance(other, int) and isinstance(value, int)
        body[target] = min(value, other) if both else value
    return Rule(Treatment.TRANSLATED, note or f"sent as {target}", rewrite=rewrite)


def enforced(note: str) -> Rule:
    """The engine does not take it; the gateway applies it to the reply (``chat.limits``)."""
    return Rule(Treatment.ENFORCED, note, rewrite=_drop)


def refused_unless(honoured: Callable[[Any, Mapping[str, Any]], bool], why: str,
                   note: str, rewrite: Callable[[Body, str, Any], None] | None = None
                   ) -> Rule:
    """Passed (or rewritten) for the values ``honoured`` accepts, refused for the rest."""
    def refuse(value: Any, body: Mapping[str, Any]) -> str | None:
        return None if honoured(value, body) else why
    return Rule(Treatment.REFUSED, note, refuse=refuse, rewrite=rewrite)


@dataclass(frozen=True, slots=True)
class MessageRule:
    """One kind's handling of a message feature (a table row such as ``role: developer``).
    ``apply(message, index)`` returns the message to send, the same object when untouched;
    it raises ``BadRequestError`` for what the kind cannot render."""

    row: str
    treatment: Treatment
    note: str
    apply: Callable[[Message, int], Message]

    def cell(self) -> str:
        return f"{self.treatment} ({self.note})"


def apply_message_rules(rules: tuple[MessageRule, ...], messages: list[Message]
                        ) -> list[Message]:
    """The messages with every rule applied; the same list when nothing changed (the hot
    path copies nothing for a plain conversation)."""
    if not rules:
        return messages
    out = messages
    for i, message in enumerate(messages):
        fixed = message
        for rule in rules:
            fixed = rule.apply(fixed, i)
        if fixed is not message:
            if out is messages:
                out = list(messages)
            out[i] = fixed
    return out


def refusal(name: str, why: str, kind: str) -> BadRequestError:
    return BadRequestError(f"{name}: {why} on this model's backends ({kind})",
                           code="unsupported_value", param=name)
