"""LLaMA-Factory training YAML for lora, qlora or full SFT, and the command that launches it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from finetune.deepspeed import deepspeed_config
from finetune.errors import ConfigError
from finetune.files import write_json
from finetune.templates import TEMPLATES, template_for

METHODS = ("lora", "qlora", "full")


@dataclass
class TrainConfig:
    model: str  # model_name_or_path: a local path (nothing is downloaded by us)
    dataset: str  # dataset_info.json names, comma-separated
    dataset_dir: str
    output_dir: str
    method: str = "lora"
    template: str = "default"  # a family from templates.py, or a LLaMA-Factory name
    cutoff_len: int = 2048
    epochs: float = 3.0
    learning_rate: float | None = None  # None: 1e-4 for (q)lora, 1e-5 for full
    batch_size: int = 1
    grad_accum: int = 8
    lora_rank: int = 8
    lora_alpha: int | None = None  # None: 2 × rank
    lora_target: str = "all"
    quantization_bit: int = 4  # qlora only: 4 or 8
    deepspeed: int | None = None  # ZeRO stage 0, 2 or 3
    offload: bool = False
    bf16: bool = True  # False on CPU or pre-Ampere GPUs
    pure_bf16: bool = False  # full only: bf16 weights and optimizer, half the memory of AMP
    max_samples: int | None = None
    val_size: float | None = None
    logging_steps: int = 10
    save_steps: int = 500
    resume_from_checkpoint: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.method == "qlora" and self.quantization_bit not in (4, 8):
            raise ConfigError("qlora needs quantization_bit 4 or 8")
        if self.method == "qlora" and self.deepspeed == 3 and self.quantization_bit != 4:
            raise ConfigError("ZeRO-3 with QLoRA works only with 4-bit quantization")
        if self.pure_bf16 and self.method != "full":
            raise ConfigError("pure_bf16 applies to full fine-tuning only")
        if self.cutoff_len <= 0 or self.batch_size <= 0 or self.grad_accum <= 0:
            raise ConfigError("cutoff_len, batch_size and grad_accum must be positive")

    @property
    def llamafactory_template(self) -> str:
        # Families map to LLaMA-Factory names; anything else is passed through as a name.
        return template_for(self.template).llamafactory if self.template in TEMPLATES \
            else self.template


def training_yaml(cfg: TrainConfig, deepspeed_path: str | None = None) -> dict[str, Any]:
    """The YAML document, keys grouped as in LLaMA-Factory's examples."""
    doc: dict[str, Any] = {"model_name_or_path": cfg.model, "trust_remote_code": True}
    if cfg.method == "qlora":
        doc["quantization_bit"] = cfg.quantization_bit
        doc["quantization_method"] = "bitsandbytes"
    doc.update({
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "full" if cfg.method == "full" else "lora",
    })
    if cfg.method != "full":
        doc.update({
            "lora_rank": cfg.lora_rank,
            "lora_alpha": cfg.lora_alpha or 2 * cfg.lora_rank,
            "lora_target": cfg.lora_target,
        })
    if deepspeed_path:
        doc["deepspeed"] = deepspeed_path
    doc.update({
        "dataset": cfg.dataset,
        "dataset_dir": cfg.dataset_dir,
        "template": cfg.llamafactory_template,
        "cutoff_len": cfg.cutoff_len,
        "overwrite_cache": True,
        "preprocessing_num_workers": 4,
    })
    if cfg.max_samples:
        doc["max_samples"] = cfg.max_samples
    doc.update({
        "output_dir": cfg.output_dir,
        "logging_steps": cfg.logging_steps,
        "save_steps": cfg.save_steps,
        "plot_loss": True,
        "overwrite_output_dir": cfg.resume_from_checkpoint is None,
        "report_to": "none",
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "learning_rate": cfg.learning_rate or (1.0e-5 if cfg.method == "full" else 1.0e-4),
        "num_train_epochs": cfg.epochs,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.1,
        "bf16": cfg.bf16,
        "ddp_timeout": 180000000,
    })
    if cfg.pure_bf16:
        doc["pure_bf16"] = True
    if cfg.resume_from_checkpoint:
        doc["resume_from_checkpoint"] = cfg.resume_from_checkpoint
    if cfg.val_size:
        doc.update({
            "val_size": cfg.val_size,
            "per_device_eval_batch_size": cfg.batch_size,
            "eval_strategy": "steps",
            "eval_steps": cfg.save_steps,
        })
    return doc


@dataclass
class Launch:
    nnodes: int = 1
    nproc_per_node: int | None = None  # None: every visible GPU
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    def commands(self, config_path: str | Path, *, distributed: bool) -> list[str]:
        """One shell command per node (node rank order).

        LLaMA-Factory starts torchrun itself when it sees more than one GPU;
        ``FORCE_TORCHRUN=1`` makes that explicit, and DeepSpeed needs it even on one GPU.
        """
        train = f"llamafactory-cli train {shlex.quote(str(config_path))}"
        if self.nnodes < 1:
            raise ConfigError("nnodes must be at least 1")
        if self.nnodes == 1 and not distributed and not self.nproc_per_node:
            return [train]
        env = ["FORCE_TORCHRUN=1"]
        if self.nproc_per_node:
            env.append(f"NPROC_PER_NODE={self.nproc_per_node}")
        if self.nnodes == 1:
            return [" ".join([*env, train])]
        return [
            " ".join([*env, f"NNODES={self.nnodes}", f"NODE_RANK={rank}",
                      f"MASTER_ADDR={self.master_addr}", f"MASTER_PORT={self.master_port}",
                      train])
            for rank in range(self.nnodes)
        ]


def write_training_config(
    cfg: TrainConfig, path: str | Path, launch: Launch | None = None
) -> tuple[Path, Path | None, list[str]]:
    """Write the YAML (and the DeepSpeed JSON beside it); return both paths and the
    launch commands."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds_path: Path | None = None
    if cfg.deepspeed is not None:
        suffix = "_offload" if cfg.offload else ""
        ds_path = path.parent / f"ds_z{cfg.deepspeed}{suffix}_config.json"
        write_json(ds_path, deepspeed_config(cfg.deepspeed, offload=cfg.offload))
    doc = training_yaml(cfg, str(ds_path.resolve()) if ds_path else None)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    launch = launch or Launch()
    distributed = cfg.deepspeed is not None or launch.nnodes > 1
    return path, ds_path, launch.commands(path, distributed=distributed)
