"""Training options, engine choice, LLaMA-Factory hand-off and data loading (no torch run)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from finetune import train as training
from finetune.cli import finetune
from finetune.errors import ConfigError, DatasetError
from finetune.train import (
    TrainOptions,
    choose_engine,
    load_samples,
    planned_steps,
    write_llamafactory_config,
)

ROWS = [{"instruction": f"q{i}", "input": "", "output": f"ANSWER: A{i}."} for i in range(5)]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "qa.json"
    path.write_text(json.dumps(ROWS))
    return path


@pytest.fixture
def fake_llamafactory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``llamafactory-cli`` on PATH that records its arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "llamafactory-cli"
    record = tmp_path / "called.txt"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {record}\nexit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return record


@pytest.fixture
def no_llamafactory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(training, "llamafactory_cli", lambda: None)


def options(tmp_path: Path, data: Path, **kwargs: object) -> TrainOptions:
    base = dict(model=str(tmp_path / "hf-model"), data=str(data),
                output_dir=str(tmp_path / "out"))
    return TrainOptions(**(base | kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"max_steps": 0}, {"cutoff_len": -1},
                                 {"learning_rate": 2.0}, {"template": "chatml-ish"}])
def test_invalid_options_are_refused(tmp_path: Path, data: Path, bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        options(tmp_path, data, **bad)


def test_all_targets_means_every_linear_layer(tmp_path: Path, data: Path) -> None:
    assert options(tmp_path, data).peft_targets == "all-linear"
    assert options(tmp_path, data, lora_targets=["q_proj", "v_proj"]).peft_targets == \
        ["q_proj", "v_proj"]


def test_planned_steps(tmp_path: Path, data: Path) -> None:
    assert planned_steps(50, options(tmp_path, data, batch_size=8, epochs=2)) == 14
    assert planned_steps(50, options(tmp_path, data, batch_size=8, grad_accum=2,
                                     epochs=1)) == 4
    assert planned_steps(50, options(tmp_path, data, max_steps=3)) == 3


def test_engine_auto_without_llamafactory_is_builtin(tmp_path: Path, data: Path,
                                                     no_llamafactory: None) -> None:
    assert choose_engine("auto", options(tmp_path, data)) == "builtin"
    with pytest.raises(ConfigError, match="not installed"):
        choose_engine("llamafactory", options(tmp_path, data))


def test_engine_auto_prefers_llamafactory_but_not_for_gguf(
        tmp_path: Path, data: Path, fake_llamafactory: Path) -> None:
    assert choose_engine("auto", options(tmp_path, data)) == "llamafactory"
    gguf = options(tmp_path, data, model=str(tmp_path / "m.gguf"))
    assert choose_engine("auto", gguf) == "builtin"
    with pytest.raises(ConfigError, match="cannot load a GGUF"):
        choose_engine("llamafactory", gguf)


def test_llamafactory_gets_a_registered_dataset_and_a_bounded_yaml(
        tmp_path: Path, data: Path) -> None:
    opts = options(tmp_path, data, model="/models/SmolLM2-135M-Instruct", max_steps=7,
                   lora_targets=["q_proj", "v_proj"], learning_rate=1e-3)
    path = write_llamafactory_config(opts, echo=lambda _: None)
    doc = yaml.safe_load(path.read_text())
    info = json.loads((tmp_path / "out" / "dataset_info.json").read_text())
    assert info["ragate_train"]["file_name"] == str(data)  # absolute: outside dataset_dir
    assert info["ragate_train"].get("formatting", "alpaca") == "alpaca"
    assert doc["dataset"] == "ragate_train" and doc["dataset_dir"] == str(tmp_path / "out")
    assert doc["template"] == "smollm2" and doc["max_steps"] == 7
    assert doc["lora_target"] == "q_proj,v_proj" and doc["learning_rate"] == 1e-3
    assert doc["bf16"] is False and doc["overwrite_output_dir"] is True


def test_cli_runs_llamafactory_when_installed(tmp_path: Path, data: Path,
                                              fake_llamafactory: Path) -> None:
    result = CliRunner().invoke(finetune, [
        "train", "--model", str(tmp_path / "hf"), "--data", str(data),
        "--output-dir", str(tmp_path / "out"), "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    assert fake_llamafactory.read_text().split() == [
        "train", str(tmp_path / "out" / "llamafactory_train.yaml")]


def test_cli_config_is_handed_to_llamafactory(tmp_path: Path, fake_llamafactory: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("stage: sft\n")
    result = CliRunner().invoke(finetune, ["train", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert fake_llamafactory.read_text().split() == ["train", str(config)]


def test_cli_config_without_llamafactory_is_a_clear_error(tmp_path: Path,
                                                          no_llamafactory: None) -> None:
    config = tmp_path / "train.yaml"
    config.write_text("stage: sft\n")
    result = CliRunner().invoke(finetune, ["train", "--config", str(config)])
    assert result.exit_code == 1
    assert "LLaMA-Factory is not installed" in result.output


def test_bad_rows_stop_training_unless_allowed(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(ROWS + [{"instruction": "q", "input": "", "output": 3}]))
    opts = options(tmp_path, path)
    with pytest.raises(DatasetError, match="1 of 6 rows have errors.*row 5"):
        load_samples(opts, echo=lambda _: None)
    said: list[str] = []
    opts.allow_invalid = True
    assert len(load_samples(opts, echo=said.append)) == 5
    assert said and "skipping 1 invalid rows" in said[0]


def test_resume_needs_a_checkpoint_and_a_fresh_run_refuses_to_clobber(
        tmp_path: Path, data: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="--resume: no checkpoint-N"):
        training._resume_point(out, resume=True)
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoint-3" / "trainer_state.json").write_text("{}")
    assert training._resume_point(out, resume=True) == out / "checkpoint-3"
    with pytest.raises(ConfigError, match="already holds checkpoint-3; pass --resume"):
        training._resume_point(out, resume=False)
