"""The built-in trainer end to end on a tiny random Llama: log, resume, merge, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from finetune.cli import finetune  # noqa: E402

pytestmark = pytest.mark.slow

SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with a character-level tokenizer, saved as an HF folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path_factory.mktemp("tiny")
    chars = sorted(set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .:?,'\n-"))
    vocab = {tok: i for i, tok in enumerate(SPECIALS + chars)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>",
        bos_token="<|im_start|>", pad_token="<|im_end|>")
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    tokenizer.save_pretrained(folder)
    config = transformers.LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        tie_word_embeddings=True)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rows = [{"instruction": f"what is {i} plus one?", "input": "",
             "output": f"ANSWER: {i + 1}."} for i in range(12)]
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def run(*args: str) -> str:
    result = CliRunner().invoke(finetune, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_train_logs_resumes_and_merges(tiny_model: Path, data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["train", "--model", str(tiny_model), "--data", str(data), "--output-dir",
              str(out), "--template", "smollm2", "--batch-size", "4", "--cutoff-len", "256",
              "--lr", "5e-3", "--save-steps", "1", "--threads", "1"]
    first = run(*common, "--max-steps", "2")
    assert "step 2/2  loss" in first and "12 examples" in first
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]

    # A second run into the same folder must say --resume rather than start over.
    clobber = CliRunner().invoke(finetune, [*common, "--max-steps", "4"])
    assert clobber.exit_code == 1 and "pass --resume" in clobber.output

    second = run(*common, "--max-steps", "4", "--resume")
    assert f"resuming from {out / 'checkpoint-2'}" in second
    assert "step 3/4" in second and "step 1/4" not in second
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4]
    assert all(row["loss"] > 0 for row in log)
    info = json.loads((out / "ragate_train.json").read_text())
    assert info["template"] == "smollm2" and info["steps"] == 4
    assert (out / "adapter_config.json").is_file()

    merged = tmp_path / "export"
    run("export", str(out), "-o", str(merged), "--no-gguf")
    model = transformers.AutoModelForCausalLM.from_pretrained(merged / "hf")
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model)
    assert not any(n.startswith("base_model") or "lora" in n for n, _ in model.named_parameters())
    q_merged = model.model.layers[0].self_attn.q_proj.weight
    q_base = base.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q_merged, q_base)  # the adapter's delta is in the weights
    saved = transformers.AutoTokenizer.from_pretrained(merged / "hf")
    assert "<|im_start|>assistant" in saved.chat_template  # the family's template


def test_lora_layers_adapts_only_the_last_layers(tiny_model: Path, data: Path,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "run"
    run("train", "--model", str(tiny_model), "--data", str(data), "--output-dir", str(out),
        "--template", "smollm2", "--max-steps", "1", "--lora-layers", "1", "--threads", "1")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [1]
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj",
                                             "gate_proj", "up_proj", "down_proj"}


def test_export_refuses_a_bitsandbytes_base(tiny_model: Path, tmp_path: Path) -> None:
    quantized = tmp_path / "q"
    quantized.mkdir()
    config = json.loads((tiny_model / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized / "config.json").write_text(json.dumps(config))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"base_model_name_or_path": str(quantized)}))
    result = CliRunner().invoke(finetune, ["export", str(adapter), "-o", str(tmp_path / "o"),
                                           "--no-gguf"])
    assert result.exit_code == 1
    assert "quantized (bitsandbytes 4-bit); cannot merge a LoRA adapter into it" in result.output
