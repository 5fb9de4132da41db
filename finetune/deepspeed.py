"""DeepSpeed ZeRO configs for LLaMA-Factory runs (stages 0, 2 and 3, optional CPU offload).

Batch sizes, clipping and precision are ``"auto"``: the HF Trainer fills them from the
training YAML, so the YAML stays the one place those are set.
"""

from __future__ import annotations

from typing import Any

from finetune.errors import ConfigError

STAGES = (0, 2, 3)


def deepspeed_config(stage: int, *, offload: bool = False) -> dict[str, Any]:
    if stage not in STAGES:
        raise ConfigError(f"ZeRO stage must be one of {STAGES}, got {stage}")
    if offload and stage == 0:
        raise ConfigError("CPU offload needs ZeRO stage 2 or 3")
    zero: dict[str, Any] = {"stage": stage}
    if stage in (0, 2):
        zero.update({
            "allgather_partitions": True,
            "allgather_bucket_size": 5e8,
            "reduce_scatter": True,
            "reduce_bucket_size": 5e8,
            "contiguous_gradients": True,
            # Overlapping communication buys speed with extra buffers; memory is usually
            # why ZeRO was chosen, so it stays off.
            "overlap_comm": False,
        })
    if stage == 2:
        zero["round_robin_gradients"] = True
    if stage == 3:
        zero.update({
            "overlap_comm": False,
            "contiguous_gradients": True,
            "sub_group_size": 1e9,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1e9,
            "stage3_max_reuse_distance": 1e9,
            # Without this a ZeRO-3 checkpoint holds only shards, which export cannot merge.
            "stage3_gather_16bit_weights_on_model_save": True,
        })
    if offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "fp16": {
            "enabled": "auto",
            "loss_scale": 0,
            "loss_scale_window": 1000,
            "initial_scale_power": 16,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "bf16": {"enabled": "auto"},
        "zero_optimization": zero,
    }
