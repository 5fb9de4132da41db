"""Registering datasets in dataset_info.json with LLaMA-Factory's schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.errors import DatasetError
from finetune.llamafactory import register_dataset
from finetune.spec import DatasetSpec


def test_register_adds_entry_and_revalidates(lf_copy: Path) -> None:
    info = lf_copy / "dataset_info.json"
    before = json.loads(info.read_text())
    data = lf_copy / "mine.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [
        {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]})
        for i in range(5)))
    entry, report = register_dataset(info, "mine", data)
    assert entry == {
        "file_name": "mine.jsonl",
        "formatting": "sharegpt",
        "columns": {"messages": "messages"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "observation_tag": "tool",
                 "function_tag": "function_call", "system_tag": "system"},
    }
    after = json.loads(info.read_text())
    assert list(after) == [*before, "mine"]  # others kept, in order
    assert {k: after[k] for k in before} == before
    assert report.ok and report.total == 5 and not report.detected
    # The entry reads back into the same spec LLaMA-Factory would build.
    assert DatasetSpec.from_entry(after["mine"]).tags.role_tag == "role"


def test_register_updates_and_reports_bad_rows(lf_copy: Path) -> None:
    info = lf_copy / "dataset_info.json"
    data = lf_copy / "qa.json"
    data.write_text(json.dumps([{"question": "q", "answer": "a"},
                                {"question": "q2", "answer": ""}]))
    spec = DatasetSpec.from_entry({"columns": {"prompt": "question", "response": "answer"}})
    entry, report = register_dataset(info, "qa", data, spec=spec)
    assert entry == {"file_name": "qa.json",
                     "columns": {"prompt": "question", "response": "answer"}}
    assert [(i.index, i.code) for i in report.errors] == [(1, "empty-answer")]
    with pytest.raises(DatasetError, match="already exists"):
        register_dataset(info, "qa", data, spec=spec, overwrite=False)


def test_file_outside_dataset_dir_gets_absolute_path(tmp_path: Path) -> None:
    info = tmp_path / "registry" / "dataset_info.json"
    info.parent.mkdir()
    data = tmp_path / "elsewhere" / "d.json"
    data.parent.mkdir()
    data.write_text(json.dumps([{"instruction": "q", "input": "", "output": "a"}]))
    entry, report = register_dataset(info, "d", data)
    assert entry["file_name"] == str(data.resolve())
    assert report.ok


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        register_dataset(tmp_path / "dataset_info.json", "x", tmp_path / "nope.json")
