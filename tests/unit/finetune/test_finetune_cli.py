"""The ``finetune`` click group: exit codes and what each command writes."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from finetune.cli import finetune
from tests.unit.finetune.conftest import LF_DATA


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(finetune, [str(a) for a in args])
    return result.exit_code, result.output


def test_validate_clean_demo_exits_zero() -> None:
    code, out = _run("validate", "--dataset-info", LF_DATA / "dataset_info.json",
                     "--name", "glaive_toolcall_en_demo")
    assert code == 0, out
    assert "300 rows, 300 valid, 0 errors" in out


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
