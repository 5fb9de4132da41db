"""GPU memory estimates for training (full, pure-bf16, LoRA, QLoRA; ZeRO over N GPUs) and
serving (weights by dtype or quantization, KV cache per token).

Units are GB = 1e9 bytes, as in LLaMA-Factory's hardware table and GPU data sheets.

Assumptions (each one shows up as a line in the breakdown):
- AdamW, gradient checkpointing on, FlashAttention/SDPA (no seq² attention scores).
- Mixed precision ("full"): fp32 weights, fp32 gradients, fp32 Adam moments, plus the bf16
  copies autocast caches during the forward pass: 18 bytes per parameter.
- ``full-bf16`` (LLaMA-Factory ``pure_bf16``): everything bf16: 8 bytes per parameter.
- LoRA/QLoRA: frozen base in bf16 / int8 / NF4 (double-quantized), embeddings and LM head
  stay bf16; adapters are upcast to fp32 for training, as LLaMA-Factory does (16 B/param).
- Activations per token: the checkpointed input of every layer, one layer's recompute
  working set, and the logits (bf16, their fp32 upcast and its gradient).
- A fixed 1 GB for the CUDA context, cuBLAS workspaces and allocator slack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from finetune.errors import ConfigError
from finetune.shapes import ModelShape

GB = 1e9
CUDA_OVERHEAD = 1.0 * GB
TRAIN_METHODS = ("full", "full-bf16", "lora", "qlora-8", "qlora-4")
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weight + double-quantized block scales
SERVE_BYTES = {  # bytes per weight; GGUF values are llama.cpp's bits-per-weight / 8
    "fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0,
    "awq": 0.5 + 2.5 / 128, "gptq": 0.5 + 2.5 / 128,  # 4-bit, group 128: fp16 scale + zero
    "q8_0": 8.5 / 8, "q6_k": 6.5625 / 8, "q5_k_m": 5.69 / 8, "q4_k_m": 4.85 / 8,
    "q4_0": 4.5 / 8, "q4_1": 5.0 / 8, "q3_k_m": 3.91 / 8, "q2_k": 2.63 / 8,
}
# Formats that keep embeddings and the LM head in 16 bits (GGUF averages already include them).
_KEEPS_EMBEDDINGS = {"fp8", "int8", "awq", "gptq"}


@dataclass
class Estimate:
    """Bytes per GPU, by component."""

    parts: dict[str, float] = field(default_factory=dict)
    gpus: int = 1
    zero_stage: int = 0

    @property
    def total_gb(self) -> float:
        return sum(self.parts.values()) / GB

    def breakdown_gb(self) -> dict[str, float]:
        return {name: round(value / GB, 2) for name, value in self.parts.items()}


def activation_bytes_per_token(shape: ModelShape, checkpointing: bool = True) -> float:
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_dim
    # One block keeps: two norm inputs and outputs, q/k/v, attention output, o_proj output,
    # gate, up, act(gate) and their product; all bf16.
    per_layer = 2 * (7 * h + 2 * kv + 4 * i)
    logits = shape.vocab * (2 + 4 + 4)
    if checkpointing:
        return shape.layers * 2 * h + per_layer + logits
    return shape.layers * per_layer + logits


def training_estimate(
    shape: ModelShape,
    method: str = "lora",
    *,
    gpus: int = 1,
    zero_stage: int | None = None,
    batch_size: int = 1,
    seq_len: int = 1024,
    lora_rank: int = 8,
    checkpointing: bool = True,
) -> Estimate:
    """Peak memory of one GPU. ``zero_stage`` defaults to 0 on one GPU, 3 on several."""
    if method not in TRAIN_METHODS:
        raise ConfigError(f"method must be one of {TRAIN_METHODS}, got {method!r}")
    if gpus < 1 or batch_size < 1 or seq_len < 1:
        raise ConfigError("gpus, batch_size and seq_len must be positive")
    stage = (0 if gpus == 1 else 3) if zero_stage is None else zero_stage
    if stage not in (0, 1, 2, 3):
        raise ConfigError("zero_stage must be 0, 1, 2 or 3")
    n = gpus

    def split(value: float, from_stage: int) -> float:
        # ZeRO partitions optimizer states (stage 1+), gradients (2+), parameters (3).
        return value / n if stage >= from_stage else value

    p = float(shape.params)
    parts: dict[str, float] = {}
    if method == "full":
        parts["weights (fp32)"] = split(4 * p, 3)
        parts["autocast bf16 copies"] = split(2 * p, 3)
        parts["gradients (fp32)"] = split(4 * p, 2)
        parts["optimizer (Adam fp32)"] = split(8 * p, 1)
    elif method == "full-bf16":
        parts["weights (bf16)"] = split(2 * p, 3)
        parts["gradients (bf16)"] = split(2 * p, 2)
        parts["optimizer (Adam bf16)"] = split(4 * p, 1)
    else:
        frozen_linear = {"lora": 2.0, "qlora-8": 1.0, "qlora-4": NF4_BYTES}[method]
        kept = float(shape.embedding_params + shape.other_params)
        parts["frozen weights"] = split(frozen_linear * shape.linear_params + 2 * kept, 3)
        adapter = float(shape.lora_params(lora_rank))
        parts["LoRA weights+grads+Adam (fp32)"] = split(4 * adapter, 3) + split(
            4 * adapter, 2) + split(8 * adapter, 1)
    if stage == 3 and n > 1:
        # ZeRO-3 gathers the layer in use and prefetches the next one, in bf16.
        parts["ZeRO-3 gathered layers"] = 2 * 2 * shape.layer_linear_params
    tokens = batch_size * seq_len
    parts["activations"] = tokens * activation_bytes_per_token(shape, checkpointing)
    parts["CUDA context + allocator"] = CUDA_OVERHEAD
    return Estimate(parts, gpus=n, zero_stage=stage)


@dataclass
class Option:
    method: str
    gpus: int | None  # None: does not fit within max_gpus
    zero_stage: int | None
    per_gpu_gb: float | None


@dataclass
class Suggestion:
    recommended: Option | None
    options: list[Option]


def suggest(
    shape: ModelShape,
    gpu_gb: float,
    *,
    max_gpus: int = 8,
    batch_size: int = 1,
    seq_len: int = 1024,
    lora_rank: int = 8,
    methods: tuple[str, ...] = TRAIN_METHODS,
) -> Suggestion:
    """For each method, the fewest GPUs (1, 2, 4, 8 …) that hold it, trying ZeRO-2 before
    ZeRO-3 because it communicates less. The recommendation is the option needing the
    fewest GPUs; ties go to the method that changes more of the model (full > LoRA >
    QLoRA). ``gpu_gb`` is compared with GB = 1e9 bytes, so an "80 GB" card (85.9e9
    bytes) keeps about 7 % headroom."""
    counts = [1]
    while counts[-1] * 2 <= max_gpus:
        counts.append(counts[-1] * 2)
    options: list[Option] = []
    for method in methods:
        found = Option(method, None, None, None)
        for n in counts:
            stages = (0,) if n == 1 else (2, 3)
            for stage in stages:
                est = training_estimate(shape, method, gpus=n, zero_stage=stage,
                                        batch_size=batch_size, seq_len=seq_len,
                                        lora_rank=lora_rank)
                if est.total_gb <= gpu_gb:
                    found = Option(method, n, stage, round(est.total_gb, 1))
                    break
            if found.gpus is not None:
                break
        options.append(found)
    fitting = [o for o in options if o.gpus is not None]
    order = {m: i for i, m in enumerate(TRAIN_METHODS)}
    best = min(fitting, key=lambda o: (o.gpus, order[o.method]), default=None)
    return Suggestion(best, options)


def serving_estimate(
    shape: ModelShape,
    dtype: str = "bf16",
    *,
    context: int = 4096,
    concurrency: int = 1,
    kv_dtype_bytes: float = 2.0,
    tensor_parallel: int = 1,
) -> Estimate:
    """Memory per GPU to serve ``concurrency`` sequences of ``context`` tokens."""
    if dtype not in SERVE_BYTES:
        raise ConfigError(f"dtype must be one of {sorted(SERVE_BYTES)}, got {dtype!r}")
    tp = tensor_parallel
    per_weight = SERVE_BYTES[dtype]
    if dtype in _KEEPS_EMBEDDINGS:
        weights = per_weight * shape.linear_params + 2 * (shape.embedding_params
                                                          + shape.other_params)
    else:
        weights = per_weight * shape.params
    kv = shape.kv_bytes_per_token(kv_dtype_bytes) * context * concurrency
    parts = {
        f"weights ({dtype})": weights / tp,
        "KV cache": kv / tp,
        "CUDA context + activations": CUDA_OVERHEAD,
    }
    return Estimate(parts, gpus=tp)


def kv_capacity_tokens(
    shape: ModelShape, gpu_gb: float, dtype: str = "bf16", *,
    memory_fraction: float = 0.9, tensor_parallel: int = 1, kv_dtype_bytes: float = 2.0,
) -> int:
    """Tokens of KV cache left once weights load, the way vLLM's ``--gpu-memory-utilization``
    (SGLang's ``--mem-fraction-static``) budgets a GPU."""
    base = serving_estimate(shape, dtype, context=0, tensor_parallel=tensor_parallel)
    free = gpu_gb * GB * memory_fraction - base.total_gb * GB
    per_token = shape.kv_bytes_per_token(kv_dtype_bytes) / tensor_parallel
    return max(0, int(free // per_token))


# LLaMA-Factory's published requirements (README "Hardware Requirement"), GB.
LLAMAFACTORY_TABLE = {
    ("7b", "full"): 120, ("7b", "full-bf16"): 60, ("7b", "lora"): 16,
    ("7b", "qlora-8"): 10, ("7b", "qlora-4"): 6, ("70b", "lora"): 160,
}
