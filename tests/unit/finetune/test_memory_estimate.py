"""The memory estimator against LLaMA-Factory's published hardware table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.errors import ConfigError
from finetune.memory import (
    GB,
    LLAMAFACTORY_TABLE,
    kv_capacity_tokens,
    serving_estimate,
    suggest,
    training_estimate,
)
from finetune.shapes import PRESETS, resolve_shape


@pytest.mark.parametrize(("size", "method"), sorted(LLAMAFACTORY_TABLE))
def test_within_15_percent_of_llamafactory_table(size: str, method: str) -> None:
    expected = LLAMAFACTORY_TABLE[(size, method)]
    got = training_estimate(resolve_shape(size), method).total_gb
    assert abs(got - expected) / expected <= 0.15, (size, method, got, expected)


@pytest.mark.parametrize(("name", "billions"), [
    ("llama2-7b", 6.738), ("llama3-8b", 8.030), ("qwen2.5-7b", 7.616),
    ("qwen2.5-14b", 14.770), ("qwen2.5-32b", 32.764), ("llama2-70b", 68.977),
    ("llama3-70b", 70.554), ("smollm2-135m", 0.1345),
])
def test_preset_parameter_counts(name: str, billions: float) -> None:
    assert PRESETS[name].params / 1e9 == pytest.approx(billions, rel=2e-3)


def test_smollm2_lora_parameters_match_peft() -> None:
    # peft reports 2,442,240 trainable parameters for r=8 on all linear layers.
    assert PRESETS["smollm2-135m"].lora_params(8) == 2_442_240


def test_hf_config_path(tmp_path: Path) -> None:
    config = {"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30,
              "num_attention_heads": 9, "num_key_value_heads": 3, "intermediate_size": 1536,
              "vocab_size": 49152, "tie_word_embeddings": True, "max_position_embeddings": 8192}
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = resolve_shape(str(tmp_path))
    assert shape.params == PRESETS["smollm2-135m"].params
    with pytest.raises(ConfigError):
        resolve_shape("no-such-model")


def test_zero_stages_partition_state() -> None:
    shape = resolve_shape("8b")
    single = training_estimate(shape, "full")
    z2 = training_estimate(shape, "full", gpus=8, zero_stage=2)
    z3 = training_estimate(shape, "full", gpus=8, zero_stage=3)
    assert single.total_gb > z2.total_gb > z3.total_gb
    assert z2.parts["weights (fp32)"] == single.parts["weights (fp32)"]
    assert z3.parts["weights (fp32)"] == pytest.approx(single.parts["weights (fp32)"] / 8)
    assert z2.parts["optimizer (Adam fp32)"] == pytest.approx(
        single.parts["optimizer (Adam fp32)"] / 8)


def test_longer_sequences_cost_activations() -> None:
    shape = resolve_shape("llama3-8b")
    short = training_estimate(shape, "lora", seq_len=1024)
    long = training_estimate(shape, "lora", seq_len=8192)
    assert long.parts["activations"] == pytest.approx(8 * short.parts["activations"])


def test_suggestion() -> None:
    small = suggest(resolve_shape("7b"), 24)
    assert small.recommended is not None
    assert (small.recommended.method, small.recommended.gpus) == ("lora", 1)
    big = suggest(resolve_shape("70b"), 80, max_gpus=8)
    full = next(o for o in big.options if o.method == "full")
    assert full.gpus is None  # 1.2 TB does not fit on 8 × 80 GB
    lora = next(o for o in big.options if o.method == "lora")
    assert lora.gpus == 2 and lora.zero_stage == 3


def test_serving_kv_cache() -> None:
    shape = resolve_shape("llama3-8b")
    assert shape.kv_bytes_per_token() == 2 * 32 * 8 * 128 * 2  # 128 KiB
    est = serving_estimate(shape, "bf16", context=8192, concurrency=4)
    assert est.parts["KV cache"] == pytest.approx(4 * 8192 * 131072)
    q4 = serving_estimate(shape, "q4_k_m", context=8192)
    assert q4.parts["weights (q4_k_m)"] < est.parts["weights (bf16)"] / 3
    tokens = kv_capacity_tokens(shape, 80, "bf16", memory_fraction=0.9)
    expected = (80 * GB * 0.9 - shape.params * 2 - 1 * GB) / 131072
    assert tokens == int(expected)
