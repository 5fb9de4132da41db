"""Load a base model (an HF folder or a GGUF file) for training or merging, never from the network.

transformers reads a GGUF file and dequantizes its weights to the requested dtype, but
leaves a GGUF "quantizer" on the model, so ``save_pretrained`` refuses ("quantized with
gguf"). Once every weight is a float tensor the marker is only a label, and we drop it.
A bitsandbytes 4/8-bit base is different: its weights stay packed integers, and merging a
LoRA into them is refused (as LLaMA-Factory refuses to export a quantized model).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.errors import ConfigError

# quant_method values (transformers' QuantizationMethod) whose weights stay packed.
PACKED_METHODS = {
    "bitsandbytes", "gptq", "awq", "aqlm", "quanto", "eetq", "hqq", "compressed-tensors",
    "fbgemm_fp8", "torchao", "bitnet", "vptq", "spqr", "fp8", "higgs", "quark", "mxfp4",
}


@dataclass(frozen=True)
class BaseModelPath:
    """Where a base model lives: ``folder`` for from_pretrained, plus the GGUF file name."""

    folder: Path
    gguf_file: str | None = None

    @classmethod
    def parse(cls, path: str | Path) -> BaseModelPath:
        path = Path(path).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return cls(path.parent.resolve(), path.name)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ConfigError(f"{path} has no config.json: not a Hugging Face model folder")
            return cls(path.resolve())
        raise ConfigError(f"base model not found: {path} (give an HF folder or a .gguf file)")

    @property
    def display(self) -> str:
        return str(self.folder / self.gguf_file) if self.gguf_file else str(self.folder)

    def kwargs(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"local_files_only": True}
        if self.gguf_file:
            extra["gguf_file"] = self.gguf_file
        return extra


def quantization_of(config: dict[str, Any]) -> str | None:
    """The packed-weight quantization an HF ``config.json`` declares, e.g. "bitsandbytes 4-bit".

    None for plain float weights and for GGUF (which transformers always dequantizes).
    """
    q = config.get("quantization_config")
    if not isinstance(q, dict):
        return None
    method = str(q.get("quant_method", "")).lower()
    if method == "gguf":
        return None
    if method == "bitsandbytes" or q.get("load_in_4bit") or q.get("load_in_8bit"):
        bits = "4-bit" if q.get("load_in_4bit") or q.get("_load_in_4bit") else "8-bit"
        return f"bitsandbytes {bits}"
    if method in PACKED_METHODS:
        return f"{method} {q['bits']}-bit" if q.get("bits") else method
    return None


def refuse_quantized_folder(base: BaseModelPath, purpose: str) -> None:
    """Raise ConfigError before loading when the folder's config declares packed weights."""
    if base.gguf_file:
        return
    try:
        config = json.loads((base.folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {base.folder / 'config.json'}: {exc}") from exc
    _refuse(quantization_of(config), base.display, purpose)


def _refuse(kind: str | None, where: str, purpose: str) -> None:
    if kind:
        raise ConfigError(
            f"{where} is quantized ({kind}); cannot {purpose} it: LoRA deltas cannot be "
            "added to packed integer weights. Use the unquantized base model (fp16/bf16/fp32 "
            "safetensors) that the adapter was trained on; QLoRA adapters merge into it too."
        )


def refuse_quantized_model(model: Any, where: str, purpose: str) -> None:
    """Raise ConfigError if a loaded model still holds packed (integer) weights.

    A GGUF-loaded model passes when every parameter is floating point: the quantizer left
    on it is then a label, removed by ``drop_gguf_marker``.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    config = getattr(model, "config", None)
    q: Any = getattr(config, "quantization_config", None)
    q_dict = q.to_dict() if hasattr(q, "to_dict") else (q if isinstance(q, dict) else {})
    _refuse(quantization_of({"quantization_config": q_dict}) if q_dict else None, where,
            purpose)
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        _refuse("bitsandbytes", where, purpose)
    packed = sorted({str(p.dtype) for p in model.parameters() if not p.dtype.is_floating_point})
    if packed:
        method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
        _refuse(f"{method or 'integer'} weights ({', '.join(packed)}), not dequantized",
                where, purpose)


def drop_gguf_marker(model: Any) -> None:
    """Forget that the weights came from a GGUF file (they are floats now) so that
    Trainer, peft and ``save_pretrained`` treat the model as a plain one."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    method = str(getattr(quantizer.quantization_config, "quant_method", "")).lower()
    if not method.endswith("gguf"):
        return
    refuse_quantized_model(model, "the GGUF model", "dequantize")
    quantizer.remove_quantization_config(model)


def load_tokenizer_for(base: BaseModelPath) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base.folder), **base.kwargs())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a tokenizer from {base.display}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(base: BaseModelPath, *, purpose: str, dtype: str = "float32") -> Any:
    """The model in ``dtype``, refused if its weights are packed; GGUF is dequantized."""
    import torch
    from transformers import AutoModelForCausalLM

    refuse_quantized_folder(base, purpose)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(base.folder), dtype=getattr(torch, dtype), **base.kwargs())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a model from {base.display}: {exc}") from exc
    if base.gguf_file:
        drop_gguf_marker(model)
    else:
        refuse_quantized_model(model, base.display, purpose)
    return model


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence two third-party warnings that say nothing to our users:

    - peft calls transformers' deprecated ``is_gradient_checkpointing`` (FutureWarning);
    - peft looks for ``config.json`` beside the base to check whether the vocabulary grew;
      a GGUF base has none, and our LoRA never touches the embeddings.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing",
                                category=FutureWarning)
        warnings.filterwarnings("ignore", message="Could not find a config file",
                                category=UserWarning)
        yield
