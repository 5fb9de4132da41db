"""LLaMA-Factory training YAML, DeepSpeed configs and launch commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from finetune.deepspeed import deepspeed_config
from finetune.errors import ConfigError
from finetune.trainconfig import Launch, TrainConfig, training_yaml, write_training_config


def _cfg(**kw: object) -> TrainConfig:
    base = dict(model="/models/SmolLM2-135M-Instruct", dataset="identity,alpaca_en_demo",
                dataset_dir="/data", output_dir="/out", template="smollm2")
    return TrainConfig(**(base | kw))  # type: ignore[arg-type]


def test_lora_yaml() -> None:
    doc = training_yaml(_cfg())
    assert doc["model_name_or_path"] == "/models/SmolLM2-135M-Instruct"
    assert (doc["stage"], doc["finetuning_type"], doc["template"]) == ("sft", "lora", "smollm2")
    assert (doc["lora_rank"], doc["lora_alpha"], doc["lora_target"]) == (8, 16, "all")
    assert doc["learning_rate"] == 1.0e-4 and "quantization_bit" not in doc
    assert doc["dataset"] == "identity,alpaca_en_demo" and doc["dataset_dir"] == "/data"
    assert "deepspeed" not in doc and doc["overwrite_output_dir"] is True


def test_qlora_and_full_yaml() -> None:
    q = training_yaml(_cfg(method="qlora", quantization_bit=8))
    assert (q["quantization_bit"], q["quantization_method"], q["finetuning_type"]) == (
        8, "bitsandbytes", "lora")
    full = training_yaml(_cfg(method="full", pure_bf16=True, template="qwen"))
    assert full["finetuning_type"] == "full" and "lora_rank" not in full
    assert full["learning_rate"] == 1.0e-5 and full["pure_bf16"] is True
    assert full["template"] == "qwen"


def test_resume_keeps_the_output_dir() -> None:
    doc = training_yaml(_cfg(resume_from_checkpoint="/out/checkpoint-500"))
    assert doc["resume_from_checkpoint"] == "/out/checkpoint-500"
    assert doc["overwrite_output_dir"] is False


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_deepspeed_written_beside_yaml(tmp_path: Path, stage: int) -> None:
    path, ds, commands = write_training_config(_cfg(deepspeed=stage), tmp_path / "t.yaml")
    doc = yaml.safe_load(path.read_text())
    assert ds is not None and doc["deepspeed"] == str(ds.resolve())
    ds_doc = json.loads(ds.read_text())
    assert ds_doc["zero_optimization"]["stage"] == stage
    assert ds_doc["train_micro_batch_size_per_gpu"] == "auto"
    assert commands == [f"FORCE_TORCHRUN=1 llamafactory-cli train {path}"]


def test_zero3_offload_and_gather() -> None:
    zero = deepspeed_config(3, offload=True)["zero_optimization"]
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero["offload_param"]["device"] == "cpu"
    with pytest.raises(ConfigError):
        deepspeed_config(1)
    with pytest.raises(ConfigError):
        deepspeed_config(0, offload=True)


def test_launch_commands() -> None:
    assert Launch().commands("t.yaml", distributed=False) == ["llamafactory-cli train t.yaml"]
    multi = Launch(nnodes=2, nproc_per_node=8, master_addr="10.0.0.1").commands(
        "t.yaml", distributed=True)
    assert multi == [
        f"FORCE_TORCHRUN=1 NPROC_PER_NODE=8 NNODES=2 NODE_RANK={rank} MASTER_ADDR=10.0.0.1 "
        "MASTER_PORT=29500 llamafactory-cli train t.yaml"
        for rank in (0, 1)
    ]


def test_invalid_configs() -> None:
    with pytest.raises(ConfigError):
        _cfg(method="dora")
    with pytest.raises(ConfigError):
        _cfg(method="qlora", quantization_bit=8, deepspeed=3)
    with pytest.raises(ConfigError):
        _cfg(method="lora", pure_bf16=True)
