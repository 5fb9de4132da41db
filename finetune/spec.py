"""How a dataset's rows map to LLaMA-Factory's fields: one ``dataset_info.json`` entry.

``DatasetSpec`` mirrors LLaMA-Factory's ``DatasetAttr``, including its quirk that a
``columns`` block replaces *every* column default: an alpaca entry with
``"columns": {"prompt": "text"}`` has no query and no response column at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from finetune.errors import DatasetError

FORMATTINGS = ("alpaca", "sharegpt", "openai")
COLUMN_NAMES = (
    "prompt", "query", "response", "history", "messages", "system", "tools",
    "images", "videos", "audios", "chosen", "rejected", "kto_tag",
)
TAG_NAMES = (
    "role_tag", "content_tag", "user_tag", "assistant_tag",
    "observation_tag", "function_tag", "system_tag",
)


@dataclass(frozen=True)
class Tags:
    """Keys and role values inside one sharegpt message (LLaMA-Factory's defaults)."""

    role_tag: str | None = "from"
    content_tag: str | None = "value"
    user_tag: str | None = "human"
    assistant_tag: str | None = "gpt"
    observation_tag: str | None = "observation"
    function_tag: str | None = "function_call"
    system_tag: str | None = "system"


OPENAI_TAGS = Tags(
    role_tag="role", content_tag="content", user_tag="user", assistant_tag="assistant",
    observation_tag="tool", function_tag="function_call", system_tag="system",
)


@dataclass(frozen=True)
class Columns:
    prompt: str | None = "instruction"
    query: str | None = "input"
    response: str | None = "output"
    history: str | None = None
    messages: str | None = "conversations"
    system: str | None = None
    tools: str | None = None
    images: str | None = None
    videos: str | None = None
    audios: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    kto_tag: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    formatting: str = "alpaca"
    ranking: bool = False
    columns: Columns = field(default_factory=Columns)
    tags: Tags = field(default_factory=Tags)
    file_name: str | None = None

    def __post_init__(self) -> None:
        if self.formatting not in FORMATTINGS:
            raise DatasetError(
                f"unknown formatting {self.formatting!r}; expected one of {FORMATTINGS}"
            )
        if self.is_messages and not (self.tags.role_tag and self.tags.content_tag):
            # A tags block replaces every default, so these two must be restated.
            raise DatasetError("a sharegpt 'tags' block needs role_tag and content_tag")

    @property
    def is_messages(self) -> bool:
        return self.formatting in ("sharegpt", "openai")

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> DatasetSpec:
        """Read one dataset_info.json entry the way LLaMA-Factory's ``DatasetAttr.join`` does."""
        if not isinstance(entry, dict):
            raise DatasetError("a dataset_info entry must be a JSON object")
        columns = _columns_block(entry["columns"]) if "columns" in entry else Columns()
        tags = Tags()
        if "tags" in entry:
            given = entry["tags"]
            if not isinstance(given, dict):
                raise DatasetError("'tags' must be an object")
            unknown = sorted(set(given) - set(TAG_NAMES))
            if unknown:
                raise DatasetError(f"unknown tag keys {unknown}; known: {list(TAG_NAMES)}")
            tags = Tags(**{name: given.get(name) for name in TAG_NAMES})
        return cls(
            formatting=entry.get("formatting", "alpaca"),
            ranking=bool(entry.get("ranking", False)),
            columns=columns,
            tags=tags,
            file_name=entry.get("file_name"),
        )

    def to_entry(self) -> dict[str, Any]:
        """The dataset_info.json entry, listing only the columns and tags this format uses."""
        entry: dict[str, Any] = {}
        if self.file_name:
            entry["file_name"] = self.file_name
        if self.formatting != "alpaca":
            entry["formatting"] = self.formatting
        if self.ranking:
            entry["ranking"] = True
        used: tuple[str, ...] = ("messages",) if self.is_messages else (
            "prompt", "query", "response", "history")
        used += ("system", "tools", "images", "videos", "audios", "chosen", "rejected", "kto_tag")
        entry["columns"] = {
            name: getattr(self.columns, name)
            for name in used
            if getattr(self.columns, name) is not None
        }
        if self.is_messages and self.tags != Tags():
            entry["tags"] = {
                f.name: getattr(self.tags, f.name)
                for f in fields(Tags)
                if getattr(self.tags, f.name) is not None
            }
        return entry

    def with_file(self, file_name: str) -> DatasetSpec:
        return replace(self, file_name=file_name)


def _columns_block(given: Any) -> Columns:
    """A ``columns`` block: LLaMA-Factory's column names mapped to the rows' field names."""
    if not isinstance(given, dict):
        raise DatasetError("'columns' must be an object")
    unknown = sorted(set(given) - set(COLUMN_NAMES))
    if unknown:
        raise DatasetError(f"unknown column keys {unknown}; keys are LLaMA-Factory's names "
                           f"({', '.join(COLUMN_NAMES)}), values the rows' fields")
    for name, value in given.items():
        if value is not None and not isinstance(value, str):
            raise DatasetError(f"column {name!r} must name a field (a string), got {value!r}")
    # LLaMA-Factory sets every column from the block, defaulting to None.
    return Columns(**{name: given.get(name) for name in COLUMN_NAMES})


def detect_spec(
    rows: list[Any],
    *,
    formatting: str | None = None,
    columns: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    ranking: bool | None = None,
) -> DatasetSpec:
    """Work out the spec of ``rows``; what the caller states is taken as given.

    Without ``columns`` the format is guessed from the keys of the first rows (alpaca,
    sharegpt or OpenAI messages), and only the keys the rows carry become columns, so the
    spec written by ``register`` is the one LLaMA-Factory needs. A ``columns`` block is
    used as it stands (like LLaMA-Factory, it replaces every default) and decides the
    format: ``messages`` makes it sharegpt, ``prompt``/``response`` alpaca. Every field it
    names must be in some row: LLaMA-Factory raises KeyError on a column no row has.
    ``formatting``, ``tags`` and ``ranking`` override what is detected.
    """
    sample = [row for row in rows[:50] if isinstance(row, dict)]
    if not sample:
        raise DatasetError("cannot detect the format: no JSON object rows")
    if columns is None:
        spec = _detect_from_keys(sample)
    else:
        spec = _detect_from_columns(rows, sample, columns, formatting, tags)
    if formatting is None and tags is None and ranking is None:
        return spec
    entry = spec.to_entry()
    if formatting is not None:
        entry["formatting"] = formatting
    if tags is not None:
        entry["tags"] = tags
    if ranking is not None:
        entry["ranking"] = ranking
    return DatasetSpec.from_entry(entry)


def _detect_from_keys(sample: list[dict[str, Any]]) -> DatasetSpec:
    keys: set[str] = set().union(*(row.keys() for row in sample))
    present = {key for key in keys if any(row.get(key) is not None for row in sample)}

    def optional(*names: str) -> dict[str, str]:
        return {name: name for name in names if name in present}

    for messages_key in ("messages", "conversations"):
        if messages_key not in present:
            continue
        first = _first_message(sample, messages_key)
        if first is None:
            continue
        tags = _message_tags(sample, messages_key, first) or Tags()
        ranking = "chosen" in present and "rejected" in present
        # Native tool_calls are read only by LLaMA-Factory's ``openai`` reader.
        formatting = "openai" if _has_tool_calls(sample, messages_key) else "sharegpt"
        columns = Columns(
            prompt=None, query=None, response=None, messages=messages_key,
            **optional("system", "tools", "images", "videos", "audios", "chosen", "rejected"),
        )
        if "kto_tag" in present or "label" in present:
            columns = replace(columns, kto_tag="kto_tag" if "kto_tag" in present else "label")
        return DatasetSpec(formatting=formatting, ranking=ranking, columns=columns, tags=tags)

    if "instruction" in present or "output" in present or "chosen" in present:
        ranking = "chosen" in present and "rejected" in present
        columns = Columns(
            prompt="instruction" if "instruction" in keys else None,
            query="input" if "input" in keys else None,
            response="output" if "output" in keys and not ranking else None,
            messages=None,
            **optional("history", "system", "tools", "chosen", "rejected"),
        )
        return DatasetSpec(formatting="alpaca", ranking=ranking, columns=columns)
    if present == {"text"}:
        return DatasetSpec(columns=Columns(prompt="text", query=None, response=None, messages=None))
    raise DatasetError(
        f"cannot detect the format from keys {sorted(keys)}: expected alpaca "
        "(instruction/input/output), sharegpt (conversations) or OpenAI (messages); "
        "map other fields with a 'columns' block (register --columns)"
    )


def _detect_from_columns(
    rows: list[Any],
    sample: list[dict[str, Any]],
    given: dict[str, Any],
    formatting: str | None,
    tags: dict[str, Any] | None,
) -> DatasetSpec:
    columns = _columns_block(given)
    keys: set[str] = set().union(*(row.keys() for row in rows if isinstance(row, dict)))
    for name, key in given.items():
        if key is not None and key not in keys:
            raise DatasetError(f"column {name!r} maps to {key!r}, which no row has; "
                               f"the rows have {sorted(keys)}")
    ranking = bool(columns.chosen and columns.rejected)
    alpaca_columns = [name for name in ("prompt", "query", "response", "history")
                      if given.get(name)]
    if formatting is None and columns.messages and alpaca_columns:
        raise DatasetError(f"the columns map both 'messages' (sharegpt) and {alpaca_columns} "
                           "(alpaca); state the formatting")
    if formatting == "alpaca" or (formatting is None and not columns.messages):
        if not (columns.prompt or columns.query):
            raise DatasetError("an alpaca 'columns' block needs 'prompt' (or 'query'): the "
                               "block replaces every default, so no prompt would be read")
        return DatasetSpec(formatting="alpaca", ranking=ranking, columns=columns)
    if not columns.messages:
        raise DatasetError(f"{formatting} rows are read from the 'messages' column, which the "
                           "'columns' block does not map")
    first = _first_message(sample, columns.messages)
    if first is None:
        raise DatasetError(f"column 'messages' maps to {columns.messages!r}, which holds no "
                           "list of message objects in the first rows")
    found = _message_tags(sample, columns.messages, first)
    if found is None and tags is None:
        raise DatasetError(f"the messages in {columns.messages!r} have keys {sorted(first)}, "
                           "neither from/value nor role/content; state the 'tags'")
    if formatting is None:
        # Native tool_calls are read only by LLaMA-Factory's ``openai`` reader.
        formatting = "openai" if _has_tool_calls(sample, columns.messages) else "sharegpt"
    return DatasetSpec(formatting=formatting, ranking=ranking, columns=columns,
                       tags=found or Tags())


def _message_tags(rows: list[dict[str, Any]], key: str, first: dict[str, Any]) -> Tags | None:
    """The tags the messages use, judged by the first one; None when it has neither
    LLaMA-Factory's from/value nor OpenAI's role/content keys."""
    if "role" in first and "content" in first:
        roles = {
            message.get("role")
            for row in rows
            for message in (row.get(key) or [])
            if isinstance(message, dict)
        }
        if "observation" in roles:
            return replace(OPENAI_TAGS, observation_tag="observation")
        return OPENAI_TAGS
    if "from" in first and "value" in first:
        return Tags()
    return None


def _first_message(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    for row in rows:
        messages = row.get(key)
        if isinstance(messages, list):
            for message in messages:
                if isinstance(message, dict):
                    return message
    return None


def _has_tool_calls(rows: list[dict[str, Any]], key: str) -> bool:
    return any(
        isinstance(message, dict) and message.get("tool_calls")
        for row in rows
        if isinstance(row.get(key), list)
        for message in row[key]
    )
