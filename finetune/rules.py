"""LLaMA-Factory's per-row rules, applied so that every bad row is named instead of skipped.

The rules follow LLaMA-Factory's converters (``data/converter.py``) and supervised
processor: in sharegpt rows, human/observation sit at odd positions and gpt/function_call
at even ones ("Invalid role tag"), a supervised row has an even message count and a ranking
row an odd one ("Invalid message count"); a broken row becomes empty and is dropped
("Skipping this abnormal example", "Dropped invalid example"). Where LLaMA-Factory would
crash instead (a non-string field, a missing key, tools that are not JSON), the row is
reported too.
"""

from __future__ import annotations

import json
from typing import Any

from finetune.samples import Issue, Message, Role, Sample, Severity
from finetune.spec import DatasetSpec

MEDIA_TOKENS = {"images": "<image>", "videos": "<video>", "audios": "<audio>"}


class _Row:
    """Collects the issues of one row."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.issues: list[Issue] = []

    def error(self, code: str, message: str) -> None:
        self.issues.append(Issue(self.index, Severity.ERROR, code, message))

    def warn(self, code: str, message: str) -> None:
        self.issues.append(Issue(self.index, Severity.WARNING, code, message))

    @property
    def broken(self) -> bool:
        return any(issue.severity is Severity.ERROR for issue in self.issues)


def check_row(index: int, row: Any, spec: DatasetSpec) -> tuple[Sample | None, list[Issue]]:
    """Normalize one row; the sample is None when the row has errors."""
    state = _Row(index)
    if not isinstance(row, dict):
        state.error("not-an-object", f"row is a {type(row).__name__}, not a JSON object")
        return None, state.issues
    if spec.is_messages:
        sample = _messages_row(state, row, spec)
    else:
        sample = _alpaca_row(state, row, spec)
    if sample is not None:
        _common(state, row, spec, sample)
    return (None if state.broken else sample), state.issues


def _text(state: _Row, row: dict[str, Any], column: str | None, *, required: bool) -> str | None:
    """The string in ``column``; None when absent. Non-strings are errors."""
    if column is None:
        return None
    if column not in row or row[column] is None:
        if required:
            state.error("missing-column", f"column {column!r} is missing or null")
        return None
    value = row[column]
    if not isinstance(value, str):
        state.error("not-a-string", f"column {column!r} must be a string, got {_kind(value)}")
        return None
    return value


def _alpaca_row(state: _Row, row: dict[str, Any], spec: DatasetSpec) -> Sample | None:
    cols = spec.columns
    messages: list[Message] = []
    history = row.get(cols.history) if cols.history else None
    if history is not None:
        if not isinstance(history, list):
            state.error("bad-history", f"column {cols.history!r} must be a list of pairs")
        else:
            for turn, pair in enumerate(history):
                if (
                    not isinstance(pair, list | tuple)
                    or len(pair) != 2
                    or not all(isinstance(part, str) for part in pair)
                ):
                    state.error("bad-history", f"history turn {turn} is not a [prompt, response] "
                                               "pair of strings")
                    break
                messages += [Message(Role.USER, pair[0]), Message(Role.ASSISTANT, pair[1])]
    prompt = _text(state, row, cols.prompt, required=True)
    query = _text(state, row, cols.query, required=False)
    user = "\n".join(part for part in (prompt, query) if part)
    unsupervised = cols.response is None and not spec.ranking
    if not user.strip() and prompt is not None:
        state.error("empty-prompt", f"{_names(cols.prompt, cols.query)} are empty")
    messages.append(Message(Role.USER, user))
    sample = Sample(state.index, messages)
    if spec.ranking:
        chosen = _text(state, row, cols.chosen, required=True)
        rejected = _text(state, row, cols.rejected, required=True)
        if chosen is not None and rejected is not None:
            sample.chosen = Message(Role.ASSISTANT, chosen)
            sample.rejected = Message(Role.ASSISTANT, rejected)
            _non_empty(state, "chosen", chosen)
            _non_empty(state, "rejected", rejected)
    elif not unsupervised:
        response = _text(state, row, cols.response, required=True)
        if response is not None:
            _non_empty(state, f"response {cols.response!r}", response)
            messages.append(Message(Role.ASSISTANT, response))
    return None if state.broken else sample


def _messages_row(state: _Row, row: dict[str, Any], spec: DatasetSpec) -> Sample | None:
    cols, tags = spec.columns, spec.tags
    raw = row.get(cols.messages) if cols.messages else None
    if raw is None:
        state.error("missing-column", f"column {cols.messages!r} is missing or null")
        return None
    if not isinstance(raw, list):
        state.error("bad-messages", f"column {cols.messages!r} must be a list, got {_kind(raw)}")
        return None
    for position, message in enumerate(raw):
        if not isinstance(message, dict) or tags.role_tag not in message:
            state.error("bad-message", f"message {position} has no {tags.role_tag!r} key")
            return None
    system = ""
    if tags.system_tag and raw and raw[0][tags.role_tag] == tags.system_tag:
        system_value = raw[0].get(tags.content_tag)
        if not isinstance(system_value, str):
            state.error("not-a-string", f"system message content is {_kind(system_value)}")
        else:
            system = system_value
        raw, offset = raw[1:], 1
    else:
        offset = 0
        system = _text(state, row, cols.system, required=False) or ""
    roles = {
        tags.user_tag: Role.USER, tags.assistant_tag: Role.ASSISTANT,
        tags.observation_tag: Role.OBSERVATION, tags.function_tag: Role.FUNCTION,
    }
    if spec.formatting == "openai":
        aligned = _openai_messages(state, raw, spec, offset)
    else:
        aligned = []
        for position, message in enumerate(raw, start=offset):
            if message.get("tool_calls") and not isinstance(message.get(tags.content_tag), str):
                state.error("tool-calls-unsupported", f"message {position} carries tool_calls, "
                            "which the sharegpt reader ignores; run `finetune convert --to "
                            "sharegpt` or register with formatting 'openai'")
                return None
            role = roles.get(message[tags.role_tag])
            aligned.append((position, role, message[tags.role_tag], message.get(tags.content_tag)))
    if state.broken:
        return None
    odd = (Role.USER, Role.OBSERVATION)
    even = (Role.ASSISTANT, Role.FUNCTION)
    for turn, (position, role, tag, _content) in enumerate(aligned):
        expected = odd if turn % 2 == 0 else even
        if role not in expected:
            wanted = "/".join(_tag_of(spec, r) for r in expected)
            state.error("invalid-role-order", f"Invalid role tag: message {position} is {tag!r} "
                        f"where {wanted} is expected")
            return None
    count = len(aligned)
    if count == 0:
        state.error("no-messages", "no user/assistant messages")
        return None
    if not spec.ranking and count % 2 != 0:
        state.error("invalid-message-count", f"Invalid message count: {count} messages; a "
                    "supervised row must end with an assistant answer (even count)")
    if spec.ranking and count % 2 == 0:
        state.error("invalid-message-count", f"Invalid message count: {count} messages; a "
                    "ranking row holds the prompt only (odd count)")
    messages: list[Message] = []
    for turn, (position, role, _tag, content) in enumerate(aligned):
        if not isinstance(content, str):
            state.error("not-a-string", f"message {position} content is {_kind(content)}")
            continue
        assert role is not None  # role order was checked above
        messages.append(Message(role, content))
        last = turn == count - 1
        if role in (Role.ASSISTANT, Role.FUNCTION) and not content.strip():
            state.error("empty-answer" if last else "empty-message",
                        f"message {position} ({role.value}) is empty")
        elif role is Role.USER and not content.strip():
            state.warn("empty-message", f"message {position} (user) is empty")
        if role is Role.FUNCTION:
            _function_call(state, position, content)
        if role is Role.OBSERVATION and turn > 0 and aligned[turn - 1][1] is not Role.FUNCTION:
            state.warn("observation-without-call", f"message {position} is a tool result that "
                       "does not follow a function call")
        if role is Role.FUNCTION and not last and aligned[turn + 1][1] is not Role.OBSERVATION:
            state.warn("call-without-observation", f"message {position} is a function call not "
                       "followed by a tool result")
    sample = Sample(state.index, messages, system=system)
    if spec.ranking:
        sample.chosen = _answer(state, row, cols.chosen, spec, "chosen")
        sample.rejected = _answer(state, row, cols.rejected, spec, "rejected")
    return None if state.broken else sample


def _openai_messages(
    state: _Row, raw: list[dict[str, Any]], spec: DatasetSpec, offset: int
) -> list[tuple[int, Role | None, Any, Any]]:
    """LLaMA-Factory's ``openai`` reader: tool_calls become a function message, runs of
    tool results merge into one observation."""
    tags = spec.tags
    roles = {tags.user_tag: Role.USER, tags.assistant_tag: Role.ASSISTANT,
             tags.function_tag: Role.FUNCTION, tags.observation_tag: Role.OBSERVATION}
    aligned: list[tuple[int, Role | None, Any, Any]] = []
    pending: list[Any] = []
    for position, message in enumerate(raw, start=offset):
        tag, content = message[str(tags.role_tag)], message.get(str(tags.content_tag))
        if tag in (tags.assistant_tag, tags.function_tag) and message.get("tool_calls"):
            try:
                content = _calls_from_tool_calls(message["tool_calls"])
            except (TypeError, KeyError, AttributeError):
                state.error("bad-tool-calls", f"message {position} tool_calls lack 'function'")
                return aligned
            tag = tags.function_tag
        if tag == tags.observation_tag:
            pending.append(content)
            continue
        if pending:
            joined = "\n</tool_response>\n<tool_response>\n".join(str(p) for p in pending)
            aligned.append((position - 1, Role.OBSERVATION, tags.observation_tag, joined))
            pending = []
        aligned.append((position, roles.get(tag), tag, content))
    if pending:
        aligned.append((offset + len(raw) - 1, Role.OBSERVATION, tags.observation_tag,
                        "\n".join(str(p) for p in pending)))
    return aligned


def _calls_from_tool_calls(tool_calls: list[dict[str, Any]]) -> str:
    """OpenAI tool_calls as a sharegpt function_call value: ``{"name", "arguments": {…}}``
    (a list for parallel calls), with the arguments string parsed back into JSON."""
    calls = []
    for call in tool_calls:
        function = call["function"]
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass  # kept as a string; _function_call still sees name and arguments
        calls.append({"name": function["name"], "arguments": arguments})
    return json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)


def _answer(
    state: _Row, row: dict[str, Any], column: str | None, spec: DatasetSpec, name: str
) -> Message | None:
    value = row.get(column) if column else None
    tags = spec.tags
    if not isinstance(value, dict):
        state.error("missing-column", f"{name} column {column!r} must be a message object")
        return None
    if value.get(tags.role_tag) not in (tags.assistant_tag, tags.function_tag):
        state.error("invalid-role-order", f"Invalid role tag: {name} is "
                    f"{value.get(tags.role_tag)!r}, expected {tags.assistant_tag!r}")
        return None
    content = value.get(tags.content_tag)
    if not isinstance(content, str):
        state.error("not-a-string", f"{name} content is {_kind(content)}")
        return None
    _non_empty(state, name, content)
    role = Role.ASSISTANT if value[tags.role_tag] == tags.assistant_tag else Role.FUNCTION
    return Message(role, content)


def _common(state: _Row, row: dict[str, Any], spec: DatasetSpec, sample: Sample) -> None:
    cols = spec.columns
    if not spec.is_messages:
        sample.system = _text(state, row, cols.system, required=False) or ""
    tools = row.get(cols.tools) if cols.tools else None
    if tools not in (None, ""):
        if spec.formatting == "openai" and isinstance(tools, list | dict):
            tools = json.dumps(tools, ensure_ascii=False)
        if not isinstance(tools, str):
            state.error("not-a-string", f"column {cols.tools!r} must be a JSON string, got "
                        f"{_kind(tools)} (LLaMA-Factory json.loads it)")
        else:
            try:
                json.loads(tools)
            except json.JSONDecodeError as exc:
                state.error("bad-tools", f"column {cols.tools!r} is not valid JSON: {exc.msg}")
            sample.tools = tools
    if any(m.role is Role.FUNCTION for m in sample.messages) and not sample.tools:
        state.warn("call-without-tools", "the row has function calls but no tool descriptions")
    if cols.kto_tag and cols.kto_tag in row:
        if not isinstance(row[cols.kto_tag], bool):
            state.error("bad-kto-tag", f"column {cols.kto_tag!r} must be true or false")
        else:
            sample.kto_tag = row[cols.kto_tag]
    for kind, token in MEDIA_TOKENS.items():
        column = getattr(cols, kind)
        if not column or row.get(column) in (None, []):
            continue
        media = row[column] if isinstance(row[column], list) else [row[column]]
        texts = [m.content for m in sample.messages]
        used = sum(text.count(token) for text in texts)
        if used != len(media):
            state.error("media-mismatch", f"{len(media)} {kind} but {used} {token} tokens")
        if kind == "images":
            sample.images = [str(item) for item in media]


def _function_call(state: _Row, position: int, content: str) -> None:
    """LLaMA-Factory's FunctionFormatter needs JSON with name and arguments."""
    try:
        calls = json.loads(content)
    except json.JSONDecodeError:
        state.error("bad-function-call", f"message {position} function call is not JSON")
        return
    for call in calls if isinstance(calls, list) else [calls]:
        if not isinstance(call, dict) or "name" not in call or "arguments" not in call:
            state.error("bad-function-call", f"message {position} function call needs "
                        "'name' and 'arguments'")
            return


def _non_empty(state: _Row, what: str, text: str) -> None:
    if not text.strip():
        state.error("empty-answer", f"{what} is empty")


def _tag_of(spec: DatasetSpec, role: Role) -> str:
    tags = spec.tags
    mapping = {Role.USER: tags.user_tag, Role.ASSISTANT: tags.assistant_tag,
               Role.OBSERVATION: tags.observation_tag, Role.FUNCTION: tags.function_tag}
    return str(mapping[role])


def _names(*columns: str | None) -> str:
    return " and ".join(repr(c) for c in columns if c)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
