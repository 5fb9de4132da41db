"""The ``finetune`` click group: exit codes and what each command writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from finetune.cli import finetune
from finetune.datasets import validate_dataset
from tests.unit.finetune.conftest import LF_DATA


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(finetune, [str(a) for a in args])
    return result.exit_code, result.output


def test_validate_clean_demo_exits_zero() -> None:
    code, out = _run("validate", "--dataset-info", LF_DATA / "dataset_info.json",
                     "--name", "glaive_toolcall_en_demo")
    assert code == 0, out
    assert "60 rows, 60 valid, 0 errors" in out  # the vendored file keeps 60 of 300 rows


def test_validate_broken_exits_one_and_writes_clean(tmp_path: Path) -> None:
    rows = [{"instruction": "q", "input": "", "output": "a"},
            {"instruction": "q2", "input": "", "output": 3}]
    src = tmp_path / "d.json"
    src.write_text(json.dumps(rows))
    code, out = _run("validate", src, "--write-clean", tmp_path / "clean.json")
    assert code == 1
    assert "row 1: error: not-a-string" in out and "wrote 1 clean rows" in out
    assert json.loads((tmp_path / "clean.json").read_text()) == rows[:1]
    code, out = _run("validate", src, "--json")
    report = json.loads(out)
    assert code == 1 and report["errors"] == 1 and report["issues"][0]["index"] == 1


def test_register_config_and_estimate(lf_copy: Path, tmp_path: Path) -> None:
    data = lf_copy / "qa.json"
    data.write_text(json.dumps([{"instruction": f"q{i}", "input": "", "output": f"a{i}"}
                                for i in range(3)]))
    info = lf_copy / "dataset_info.json"
    code, out = _run("register", data, "--dataset-info", info, "--name", "qa")
    assert code == 0, out
    assert json.loads(info.read_text())["qa"]["file_name"] == "qa.json"

    out_yaml = tmp_path / "cfg" / "train.yaml"
    code, out = _run("config", "--model", "/models/SmolLM2-135M-Instruct", "--dataset", "qa",
                     "--dataset-info", info, "--output-dir", tmp_path / "saves",
                     "--out", out_yaml, "--deepspeed", "2", "--nnodes", "2")
    assert code == 0, out
    doc = yaml.safe_load(out_yaml.read_text())
    assert doc["template"] == "smollm2" and doc["dataset_dir"] == str(lf_copy.resolve())
    assert Path(doc["deepspeed"]).name == "ds_z2_config.json"
    assert "NODE_RANK=0" in out and "NODE_RANK=1" in out

    code, out = _run("estimate", "7b", "--gpu-gb", "24")
    assert code == 0 and "suggested: lora on 1 GPU(s)" in out
    code, out = _run("estimate", "llama3-8b", "--serve", "bf16", "--json")
    assert code == 0 and json.loads(out)["serving"]["kv_bytes_per_token"] == 131072


def test_library_errors_become_messages(tmp_path: Path) -> None:
    code, out = _run("validate", tmp_path / "missing.json")
    assert code == 1 and "not found" in out
    code, out = _run("estimate", "nonexistent-model")
    assert code == 1 and "unknown model" in out


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(rows))
    return path


@pytest.mark.parametrize("formatting", [[], ["--formatting", "alpaca"]])
def test_register_custom_columns_as_alpaca(tmp_path: Path, formatting: list[str]) -> None:
    data = _write(tmp_path / "qa.json", [{"question": "q0", "answer": "a0", "source": "x"},
                                         {"question": "q1", "answer": " "},
                                         {"question": "q2", "answer": "a2"}])
    info = tmp_path / "dataset_info.json"
    columns = {"prompt": "question", "response": "answer"}
    code, out = _run("register", data, "--dataset-info", info, "--name", "qa",
                     "--columns", json.dumps(columns), *formatting)
    # The entry LLaMA-Factory's data/README.md shows for custom alpaca columns.
    assert json.loads(info.read_text()) == {"qa": {"file_name": "qa.json", "columns": columns}}
    assert code == 1, out
    assert "alpaca (from dataset_info.json), 3 rows, 2 valid, 1 errors" in out
    assert "row 1: error: empty-answer: response 'answer' is empty" in out
    report = validate_dataset(dataset_info=info, name="qa")
    assert [[m.content for m in s.messages] for s in report.samples] == [["q0", "a0"],
                                                                          ["q2", "a2"]]


@pytest.mark.parametrize(("formatting", "expected"), [([], "sharegpt"),
                                                      (["--formatting", "openai"], "openai")])
def test_register_custom_columns_as_messages(tmp_path: Path, formatting: list[str],
                                             expected: str) -> None:
    data = _write(tmp_path / "chat.json", [
        {"dialog": [{"role": "user", "content": f"q{i}"},
                    {"role": "assistant", "content": f"a{i}"}], "persona": "terse"}
        for i in range(2)])
    info = tmp_path / "dataset_info.json"
    columns = {"messages": "dialog", "system": "persona"}
    code, out = _run("register", data, "--dataset-info", info, "--name", "chat",
                     "--columns", json.dumps(columns), *formatting)
    assert code == 0, out
    assert json.loads(info.read_text())["chat"] == {
        "file_name": "chat.json", "formatting": expected, "columns": columns,
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant", "observation_tag": "tool",
                 "function_tag": "function_call", "system_tag": "system"},
    }
    assert f"{expected} (from dataset_info.json), 2 rows, 2 valid, 0 errors" in out
    report = validate_dataset(dataset_info=info, name="chat")
    assert [(s.system, s.messages[0].content) for s in report.samples] == [("terse", "q0"),
                                                                           ("terse", "q1")]


@pytest.mark.parametrize(("columns", "formatting", "message"), [
    ({"prompt": "question", "response": "reply"}, [],
     "column 'response' maps to 'reply', which no row has; the rows have ['answer', 'question']"),
    ({"messages": "question"}, [], "column 'messages' maps to 'question', which holds no list"),
    ({"prompt": "question", "response": "answer"}, ["--formatting", "sharegpt"],
     "sharegpt rows are read from the 'messages' column"),
    ({"system": "question"}, [], "an alpaca 'columns' block needs 'prompt'"),
    ({"question": "prompt"}, [], "unknown column keys ['question']"),
])
def test_register_refuses_columns_the_rows_do_not_fit(
    tmp_path: Path, columns: dict[str, str], formatting: list[str], message: str
) -> None:
    data = _write(tmp_path / "qa.json", [{"question": "q", "answer": "a"}])
    info = tmp_path / "dataset_info.json"
    code, out = _run("register", data, "--dataset-info", info, "--name", "qa",
                     "--columns", json.dumps(columns), *formatting)
    assert code == 1 and message in out, out
    assert not info.exists()  # nothing registered


def test_register_needs_a_json_object_for_columns(tmp_path: Path) -> None:
    data = _write(tmp_path / "qa.json", [{"question": "q", "answer": "a"}])
    for bad in ('{"prompt": question}', '["prompt"]'):
        code, out = _run("register", data, "--dataset-info", tmp_path / "i.json", "--name",
                         "qa", "--columns", bad)
        assert code == 2 and "--columns" in out, out
