"""Convert datasets between alpaca, sharegpt and OpenAI-messages layouts.

Conversion goes through the validated ``Sample`` form, so a row LLaMA-Factory would drop is
reported, not converted. Each target comes with the dataset_info.json spec that reads it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.datasets import ValidationReport, validate_dataset
from finetune.errors import ConversionError
from finetune.files import write_rows
from finetune.samples import Issue, Message, Role, Sample, Severity
from finetune.spec import OPENAI_TAGS, Columns, DatasetSpec

TARGETS = ("alpaca", "sharegpt", "openai")
_SHAREGPT_TAGS = {Role.USER: "human", Role.ASSISTANT: "gpt",
                  Role.OBSERVATION: "observation", Role.FUNCTION: "function_call"}


@dataclass
class ConversionResult:
    rows: list[dict[str, Any]]
    spec: DatasetSpec
    skipped: list[Issue] = field(default_factory=list)
    path: Path | None = None
    source: ValidationReport | None = None


def target_spec(to: str, *, ranking: bool = False, tools: bool = False,
                function_calls: bool = False) -> DatasetSpec:
    """The dataset_info.json mapping of what ``convert_samples`` writes."""
    if to == "alpaca":
        columns = Columns(history="history", system="system", messages=None,
                          tools="tools" if tools else None)
        if ranking:
            columns = Columns(response=None, history="history", system="system",
                              chosen="chosen", rejected="rejected", messages=None)
        return DatasetSpec(formatting="alpaca", ranking=ranking, columns=columns)
    if to == "sharegpt":
        columns = Columns(prompt=None, query=None, response=None, system="system",
                          tools="tools" if tools else None,
                          chosen="chosen" if ranking else None,
                          rejected="rejected" if ranking else None)
        return DatasetSpec(formatting="sharegpt", ranking=ranking, columns=columns)
    if to == "openai":
        columns = Columns(prompt=None, query=None, response=None, messages="messages",
                          tools="tools" if tools else None,
                          chosen="chosen" if ranking else None,
                          rejected="rejected" if ranking else None)
        # Native tool_calls need LLaMA-Factory's ``openai`` reader; plain chats read fine as
        # sharegpt with role/content tags, which every LLaMA-Factory version understands.
        formatting = "openai" if function_calls else "sharegpt"
        return DatasetSpec(formatting=formatting, ranking=ranking, columns=columns,
                           tags=OPENAI_TAGS)
    raise ConversionError(f"unknown target {to!r}; expected one of {TARGETS}")


def convert_samples(samples: Sequence[Sample], to: str) -> ConversionResult:
    if to not in TARGETS:
        raise ConversionError(f"unknown target {to!r}; expected one of {TARGETS}")
    rows: list[dict[str, Any]] = []
    skipped: list[Issue] = []
    for sample in samples:
        try:
            rows.append(_WRITERS[to](sample))
        except ConversionError as exc:
            skipped.append(Issue(sample.index, Severity.ERROR, "not-convertible", str(exc)))
    spec = target_spec(
        to,
        ranking=any(s.chosen is not None for s in samples),
        tools=any(s.tools for s in samples),
        function_calls=any(m.role is Role.FUNCTION for s in samples for m in s.messages),
    )
    return ConversionResult(rows, spec, skipped)


def convert_file(src: str | Path, dst: str | Path, to: str, *, spec: DatasetSpec | None = None,
                 dataset_info: str | Path | None = None, name: str | None = None,
                 ) -> ConversionResult:
    """Validate ``src``, convert its valid rows, write ``dst`` (.json or .jsonl)."""
    report = validate_dataset(src, spec=spec, dataset_info=dataset_info, name=name)
    result = convert_samples(report.samples, to)
    result.skipped = report.errors + result.skipped
    result.source = report
    result.path = write_rows(dst, result.rows)
    result.spec = result.spec.with_file(Path(dst).name)
    return result


def _to_alpaca(sample: Sample) -> dict[str, Any]:
    if any(m.role in (Role.FUNCTION, Role.OBSERVATION) for m in sample.messages):
        raise ConversionError("alpaca has no place for function calls or tool results")
    prompt = sample.prompt
    pairs = [[prompt[i].content, prompt[i + 1].content] for i in range(0, len(prompt) - 1, 2)]
    row: dict[str, Any] = {"instruction": prompt[-1].content, "input": ""}
    if sample.chosen is not None and sample.rejected is not None:
        row["chosen"] = sample.chosen.content
        row["rejected"] = sample.rejected.content
    else:
        response = sample.response
        row["output"] = response.content if response else ""
    if sample.system:
        row["system"] = sample.system
    if pairs:
        row["history"] = pairs
    if sample.tools:
        row["tools"] = sample.tools
    return row


def _to_sharegpt(sample: Sample) -> dict[str, Any]:
    row: dict[str, Any] = {
        "conversations": [{"from": _SHAREGPT_TAGS[m.role], "value": m.content}
                          for m in sample.messages],
    }
    if sample.system:
        row["system"] = sample.system
    if sample.tools:
        row["tools"] = _unwrap_tools(sample.tools)
    if sample.chosen is not None and sample.rejected is not None:
        row["chosen"] = {"from": _SHAREGPT_TAGS[sample.chosen.role], "value": sample.chosen.content}
        row["rejected"] = {"from": _SHAREGPT_TAGS[sample.rejected.role],
                           "value": sample.rejected.content}
    return row


def _to_openai(sample: Sample) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if sample.system:
        messages.append({"role": "system", "content": sample.system})
    for message in sample.messages:
        messages.append(_openai_message(message))
    row: dict[str, Any] = {"messages": messages}
    if sample.tools:
        row["tools"] = [{"type": "function", "function": tool}
                        for tool in json.loads(_unwrap_tools(sample.tools))]
    if sample.chosen is not None and sample.rejected is not None:
        row["chosen"] = _openai_message(sample.chosen)
        row["rejected"] = _openai_message(sample.rejected)
    return row


def _openai_message(message: Message) -> dict[str, Any]:
    if message.role is Role.FUNCTION:
        calls = json.loads(message.content)
        calls = calls if isinstance(calls, list) else [calls]
        return {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {
                "name": call["name"],
                # OpenAI carries arguments as a JSON string.
                "arguments": call["arguments"] if isinstance(call["arguments"], str)
                else json.dumps(call["arguments"], ensure_ascii=False),
            }}
            for call in calls
        ]}
    if message.role is Role.OBSERVATION:
        return {"role": "tool", "content": message.content}
    return {"role": message.role.value, "content": message.content}


def _unwrap_tools(tools: str) -> str:
    """Tool descriptions as LLaMA-Factory's sharegpt data keeps them: a JSON string of a list
    of functions, without OpenAI's ``{"type": "function", "function": …}`` wrapper."""
    parsed = json.loads(tools)
    parsed = parsed if isinstance(parsed, list) else [parsed]
    if all(isinstance(t, dict) and t.get("type") == "function" and "function" in t
           for t in parsed):
        return json.dumps([t["function"] for t in parsed], ensure_ascii=False)
    return tools


_WRITERS = {"alpaca": _to_alpaca, "sharegpt": _to_sharegpt, "openai": _to_openai}
