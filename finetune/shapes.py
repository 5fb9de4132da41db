"""Decoder shapes (layers, widths, heads, vocabulary) and the parameter counts they imply."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.errors import ConfigError


@dataclass(frozen=True)
class ModelShape:
    """A Llama-style decoder: attention with grouped KV heads, gated MLP, RMSNorm."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    head_dim_: int | None = None
    tied_embeddings: bool = False
    qkv_bias: bool = False
    max_position: int = 4096

    @property
    def head_dim(self) -> int:
        return self.head_dim_ or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_linear_params(self) -> int:
        """Weights of the seven projections of one layer (what LoRA and bitsandbytes touch)."""
        h = self.hidden
        return h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h + 3 * h * self.intermediate

    @property
    def linear_params(self) -> int:
        return self.layers * self.layer_linear_params

    @property
    def embedding_params(self) -> int:
        """Input embedding plus the LM head when untied; kept in 16 bits by quantizers."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def other_params(self) -> int:
        """Norms and biases."""
        bias = (self.q_dim + 2 * self.kv_dim) if self.qkv_bias else 0
        return self.layers * (2 * self.hidden + bias) + self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params + self.other_params

    def lora_params(self, rank: int) -> int:
        """LoRA on every linear layer of every block (LLaMA-Factory's ``lora_target: all``):
        each ``in × out`` projection gains ``rank × (in + out)`` parameters."""
        h, q, kv, i = self.hidden, self.q_dim, self.kv_dim, self.intermediate
        per_layer = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h)
        return self.layers * rank * per_layer

    def kv_bytes_per_token(self, dtype_bytes: float = 2.0) -> float:
        """KV cache of one token: keys and values, every layer."""
        return 2 * self.layers * self.kv_dim * dtype_bytes


PRESETS: dict[str, ModelShape] = {
    shape.name: shape
    for shape in (
        ModelShape("llama2-7b", 4096, 32, 32, 32, 11008, 32000),
        ModelShape("llama2-13b", 5120, 40, 40, 40, 13824, 32000),
        ModelShape("llama2-70b", 8192, 80, 64, 8, 28672, 32000),
        ModelShape("llama3-8b", 4096, 32, 32, 8, 14336, 128256, max_position=8192),
        ModelShape("llama3-70b", 8192, 80, 64, 8, 28672, 128256, max_position=8192),
        ModelShape("qwen2.5-7b", 3584, 28, 28, 4, 18944, 152064, qkv_bias=True,
                   max_position=32768),
        ModelShape("qwen2.5-14b", 5120, 48, 40, 8, 13824, 152064, qkv_bias=True,
                   max_position=32768),
        ModelShape("qwen2.5-32b", 5120, 64, 40, 8, 27648, 152064, qkv_bias=True,
                   max_position=32768),
        ModelShape("smollm2-135m", 576, 30, 9, 3, 1536, 49152, tied_embeddings=True,
                   max_position=8192),
    )
}
# Bare sizes pick the model LLaMA-Factory's hardware table most likely describes.
ALIASES = {"7b": "llama2-7b", "8b": "llama3-8b", "13b": "llama2-13b", "14b": "qwen2.5-14b",
           "32b": "qwen2.5-32b", "70b": "llama2-70b", "135m": "smollm2-135m"}


def shape_from_hf_config(path: str | Path) -> ModelShape:
    """Read an HF ``config.json`` (or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read model config {path}: {exc}") from exc
    config = config.get("text_config", config)  # multimodal wrappers keep the LM inside
    try:
        heads = int(config["num_attention_heads"])
        return ModelShape(
            name=str(config.get("_name_or_path") or path.parent.name),
            hidden=int(config["hidden_size"]),
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            intermediate=int(config["intermediate_size"]),
            vocab=int(config["vocab_size"]),
            head_dim_=config.get("head_dim"),
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=bool(config.get("attention_bias", False))
            or config.get("model_type", "").startswith("qwen2"),
            max_position=int(config.get("max_position_embeddings", 4096)),
        )
    except KeyError as exc:
        raise ConfigError(f"{path} lacks {exc.args[0]!r}; is it a decoder LM config?") from exc


def resolve_shape(model: str) -> ModelShape:
    """A preset name (``llama3-8b``, ``7b``) or a path to a config.json / model folder."""
    key = model.lower()
    if key in PRESETS:
        return PRESETS[key]
    if key in ALIASES:
        return PRESETS[ALIASES[key]]
    if Path(model).exists():
        return shape_from_hf_config(model)
    raise ConfigError(
        f"unknown model {model!r}: use a preset ({', '.join(PRESETS)}), a size alias "
        f"({', '.join(ALIASES)}) or a path to a config.json"
    )
