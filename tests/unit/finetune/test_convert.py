"""Conversions between alpaca, sharegpt and OpenAI messages, checked by round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.convert import convert_file, convert_samples
from finetune.datasets import validate_dataset
from finetune.errors import ConversionError
from tests.unit.finetune.conftest import LF_DATA

INFO = LF_DATA / "dataset_info.json"


def _round_trip(tmp_path: Path, src: Path, first: str, second: str, **kw: str) -> tuple:
    there = convert_file(src, tmp_path / f"a.{first}.json", first, **kw)  # type: ignore[arg-type]
    back = convert_file(there.path, tmp_path / f"b.{second}.json", second, spec=there.spec)
    return there, back


def test_alpaca_to_sharegpt_and_back_is_lossless(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Name a colour.", "input": "", "output": "Blue.", "system": "terse"},
        {"instruction": "And another?", "input": "", "output": "Red.",
         "history": [["Name a colour.", "Blue."]]},
    ]
    src = tmp_path / "src.json"
    src.write_text(json.dumps(rows))
    there, back = _round_trip(tmp_path, src, "sharegpt", "alpaca")
    assert there.rows[1]["conversations"][0] == {"from": "human", "value": "Name a colour."}
    assert there.rows[0]["system"] == "terse"
    assert back.rows == rows
    assert validate_dataset(back.path, spec=back.spec).ok


def test_alpaca_demo_round_trips_through_openai(tmp_path: Path) -> None:
    src = LF_DATA / "alpaca_en_demo.json"
    original = json.loads(src.read_text())
    there, back = _round_trip(tmp_path, src, "openai", "alpaca")
    assert there.spec.formatting == "sharegpt" and there.spec.tags.role_tag == "role"
    # alpaca's "instruction\ninput" becomes one user message, so compare the user text.
    for before, after in zip(original, back.rows, strict=True):
        user = "\n".join(p for p in (before["instruction"], before["input"]) if p)
        assert (after["instruction"], after["output"]) == (user, before["output"])


def test_tool_calls_round_trip_sharegpt_openai_sharegpt(tmp_path: Path) -> None:
    src = LF_DATA / "glaive_toolcall_en_demo.json"
    there, back = _round_trip(tmp_path, src, "openai", "sharegpt", dataset_info=str(INFO),
                              name="glaive_toolcall_en_demo")
    assert there.spec.formatting == "openai"  # native tool_calls need the openai reader
    calls = [m for r in there.rows for m in r["messages"] if "tool_calls" in m]
    assert calls and all(isinstance(c["tool_calls"][0]["function"]["arguments"], str)
                         for c in calls)
    assert all(t["type"] == "function" for r in there.rows for t in r.get("tools", []))
    original = json.loads(src.read_text())
    for before, after in zip(original, back.rows, strict=True):
        assert after["conversations"] == before["conversations"]
        assert json.loads(after["tools"]) == json.loads(before["tools"])
    assert validate_dataset(back.path, spec=back.spec).ok


def test_ranking_round_trip(tmp_path: Path) -> None:
    src = LF_DATA / "dpo_zh_demo.json"
    there, back = _round_trip(tmp_path, src, "openai", "sharegpt", dataset_info=str(INFO),
                              name="dpo_zh_demo")
    assert there.spec.ranking and back.spec.ranking
    original = json.loads(src.read_text())
    for before, after in zip(original, back.rows, strict=True):
        assert (after["chosen"], after["rejected"]) == (before["chosen"], before["rejected"])
        human = [m for m in before["conversations"] if m["from"] != "system"]
        assert after["conversations"] == human
        system = [m["value"] for m in before["conversations"] if m["from"] == "system"]
        assert after.get("system", "") == (system[0] if system else "")


def test_alpaca_cannot_hold_function_calls(tmp_path: Path) -> None:
    report = validate_dataset(dataset_info=INFO, name="glaive_toolcall_en_demo")
    result = convert_samples(report.samples, "alpaca")
    with_calls = {s.index for s in report.samples
                  if any(m.role.value in ("function", "observation") for m in s.messages)}
    assert {i.index for i in result.skipped} == with_calls
    assert len(result.rows) == len(report.samples) - len(with_calls)


def test_invalid_rows_are_not_converted(tmp_path: Path) -> None:
    src = tmp_path / "d.json"
    src.write_text(json.dumps([{"instruction": "q", "input": "", "output": 1},
                               {"instruction": "q", "input": "", "output": "a"}]))
    result = convert_file(src, tmp_path / "o.jsonl", "sharegpt")
    assert [(i.index, i.code) for i in result.skipped] == [(0, "not-a-string")]
    assert len(result.rows) == 1


def test_unknown_target() -> None:
    with pytest.raises(ConversionError):
        convert_samples([], "chatml")
