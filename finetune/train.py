"""Train a LoRA adapter: through LLaMA-Factory when it is installed, else a small built-in SFT.

The built-in path is the transformers Trainer with a peft LoRA, loss on responses only,
prompts rendered with the same template map used for serving and Modelfiles
(``templates.py``). It runs on CPU, reads an HF folder or a GGUF file as the base, logs
every logging step to the console and to ``train_log.jsonl``, and resumes from the last
``checkpoint-N``. The output folder holds the adapter, the tokenizer and
``ragate_train.json`` (base model, template), which ``export`` reads.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from finetune.datasets import validate_dataset
from finetune.errors import ConfigError, DatasetError
from finetune.files import write_json
from finetune.llamafactory import dataset_dir_of, register_dataset
from finetune.models import BaseModelPath, load_model, load_tokenizer_for, quiet_peft
from finetune.samples import Sample
from finetune.sft import Example, encode_sample, last_checkpoint, pad_batch
from finetune.templates import FAMILIES, guess_family, template_for
from finetune.trainconfig import TrainConfig, training_yaml

LOG_FILE = "train_log.jsonl"
INFO_FILE = "ragate_train.json"
ENGINES = ("auto", "builtin", "llamafactory")

Echo = Callable[[str], None]


@dataclass
class TrainOptions:
    model: str  # HF folder or .gguf file
    data: str | None  # data file; may be omitted when the dataset_info entry names it
    output_dir: str
    dataset_info: str | None = None
    dataset_name: str | None = None
    template: str | None = None  # family; None: guessed from the model path and its template
    max_steps: int | None = None  # None: run ``epochs`` epochs
    epochs: float = 3.0
    batch_size: int = 8
    grad_accum: int = 1
    cutoff_len: int = 256
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_steps: int = 0
    lora_r: int = 8
    lora_alpha: int | None = None  # None: 2 × r
    lora_dropout: float = 0.0
    lora_targets: list[str] = field(default_factory=lambda: ["all"])
    # LoRA on the last N decoder layers only: backpropagation stops at the lowest adapted
    # layer, so a step costs little more than a forward pass (what makes CPU runs bearable).
    lora_layers: int | None = None
    logging_steps: int = 1
    save_steps: int | None = None  # None: save once, at the end
    save_total_limit: int = 2
    max_samples: int | None = None
    seed: int = 42
    threads: int | None = None  # torch intra-op threads; None: min(2, cores)
    resume: bool = False
    allow_invalid: bool = False  # train on the valid rows of a file that has bad rows

    def __post_init__(self) -> None:
        positive = {"batch_size": self.batch_size, "grad_accum": self.grad_accum,
                    "cutoff_len": self.cutoff_len, "lora_r": self.lora_r,
                    "logging_steps": self.logging_steps}
        bad = [name for name, value in positive.items() if value <= 0]
        if self.max_steps is not None and self.max_steps <= 0:
            bad.append("max_steps")
        if self.lora_layers is not None and self.lora_layers <= 0:
            bad.append("lora_layers")
        if self.epochs <= 0:
            bad.append("epochs")
        if bad:
            raise ConfigError(f"must be positive: {', '.join(bad)}")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate {self.learning_rate} is outside (0, 1)")
        if self.template is not None and self.template not in FAMILIES:
            raise ConfigError(f"unknown template {self.template!r}; known: {list(FAMILIES)}")

    @property
    def peft_targets(self) -> str | list[str]:
        """peft's ``target_modules``: "all" means every linear layer except the LM head."""
        return "all-linear" if self.lora_targets in (["all"], ["all-linear"]) \
            else list(self.lora_targets)


@dataclass
class TrainResult:
    output_dir: Path
    engine: str
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    resumed_from: Path | None = None
    examples: int = 0
    seconds: float = 0.0

    @property
    def first_loss(self) -> float | None:
        return self.losses[0] if self.losses else None

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None


# --- LLaMA-Factory ---------------------------------------------------------------------------

def llamafactory_cli() -> str | None:
    """``llamafactory-cli`` if LLaMA-Factory is installed (on PATH, or importable)."""
    found = shutil.which("llamafactory-cli")
    if found:
        return found
    if importlib.util.find_spec("llamafactory") is not None:
        beside = Path(sys.executable).parent / "llamafactory-cli"
        return str(beside) if beside.is_file() else None
    return None


def run_llamafactory(config: str | Path, *, echo: Echo = print,
                     cli: str | None = None) -> int:
    """Run ``llamafactory-cli train CONFIG``, streaming its output; returns its exit status."""
    cli = cli or llamafactory_cli()
    if cli is None:
        raise ConfigError("LLaMA-Factory is not installed (`llamafactory-cli` not found); "
                          "use the built-in trainer: ragate finetune train --model … --data …")
    command = [cli, "train", str(config)]
    echo("$ " + " ".join(command))
    return subprocess.call(command)


def choose_engine(engine: str, options: TrainOptions) -> str:
    """``builtin`` or ``llamafactory``; ``auto`` takes LLaMA-Factory when it is installed and
    can read the base (it cannot load a GGUF file)."""
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {ENGINES}, got {engine!r}")
    is_gguf = Path(options.model).suffix == ".gguf"
    if engine == "llamafactory":
        if llamafactory_cli() is None:
            raise ConfigError("--engine llamafactory: LLaMA-Factory is not installed")
        if is_gguf:
            raise ConfigError("LLaMA-Factory cannot load a GGUF base; use --engine builtin")
        return engine
    if engine == "auto":
        return "llamafactory" if llamafactory_cli() and not is_gguf else "builtin"
    return engine


def write_llamafactory_config(options: TrainOptions, echo: Echo = print) -> Path:
    """The LLaMA-Factory YAML for ``options`` (registering a bare data file in a
    dataset_info.json in the output folder first)."""
    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if options.dataset_info:
        if not options.dataset_name:
            raise ConfigError("--name is required with --dataset-info")
        info, name = Path(options.dataset_info), options.dataset_name
    else:
        if not options.data:
            raise ConfigError("no data file given")
        info, name = out / "dataset_info.json", "ragate_train"
        _, report = register_dataset(info, name, options.data)
        if not report.ok and not options.allow_invalid:
            raise DatasetError(f"{options.data}: {len(report.bad_rows())} rows have errors; "
                               "run ragate finetune validate")
    resume = _resume_point(out, options.resume)
    cfg = TrainConfig(
        model=options.model, dataset=name, dataset_dir=dataset_dir_of(info),
        output_dir=str(out), method="lora",
        template=options.template or guess_family(options.model),
        cutoff_len=options.cutoff_len, epochs=options.epochs,
        learning_rate=options.learning_rate, batch_size=options.batch_size,
        grad_accum=options.grad_accum, lora_rank=options.lora_r,
        lora_alpha=options.lora_alpha, lora_target=",".join(options.lora_targets),
        bf16=False, max_samples=options.max_samples, logging_steps=options.logging_steps,
        save_steps=options.save_steps or 500,
        resume_from_checkpoint=str(resume) if resume else None,
    )
    doc = training_yaml(cfg)
    doc.update({"lr_scheduler_type": options.lr_scheduler, "seed": options.seed,
                "lora_dropout": options.lora_dropout, "warmup_steps": options.warmup_steps})
    doc.pop("warmup_ratio", None)
    if options.max_steps:
        doc["max_steps"] = options.max_steps
    path = out / "llamafactory_train.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    echo(f"wrote {path} (template {cfg.llamafactory_template}; bf16 off: set it in the YAML "
         "on a GPU that has it)")
    return path


# --- built-in SFT ----------------------------------------------------------------------------

def load_samples(options: TrainOptions, echo: Echo = print) -> list[Sample]:
    """The dataset's valid supervised samples, read and checked by ``validate_dataset``."""
    report = validate_dataset(options.data, dataset_info=options.dataset_info,
                              name=options.dataset_name)
    if report.errors:
        first = "; ".join(str(i) for i in report.errors[:3])
        if not options.allow_invalid:
            raise DatasetError(
                f"{report.path}: {len(report.bad_rows())} of {report.total} rows have errors "
                f"({first}); fix them (ragate finetune validate --write-clean) or pass "
                "--allow-invalid to train on the valid rows")
        echo(f"skipping {len(report.bad_rows())} invalid rows: {first}")
    if report.spec.ranking:
        raise DatasetError(f"{report.path} is a ranking dataset (chosen/rejected); "
                           "supervised fine-tuning needs one response per prompt")
    samples = [s for s in report.samples if s.response is not None]
    if options.max_samples:
        samples = samples[:options.max_samples]
    if not samples:
        raise DatasetError(f"{report.path}: no rows to train on")
    return samples


def build_examples(samples: list[Sample], tokenizer: Any, family: str, cutoff_len: int,
                   echo: Echo = print) -> list[Example]:
    template = template_for(family)
    examples = []
    dropped = truncated = 0
    for sample in samples:
        example = encode_sample(sample, tokenizer, template, cutoff_len)
        if example is None:
            dropped += 1
            continue
        truncated += example.truncated
        examples.append(example)
    if truncated or dropped:
        echo(f"cutoff_len {cutoff_len}: {truncated} rows truncated, {dropped} rows dropped "
             "(nothing left to train on after the cut)")
    if not examples:
        raise DatasetError("no row has a response within cutoff_len; raise --cutoff-len")
    return examples


def planned_steps(n_examples: int, options: TrainOptions) -> int:
    if options.max_steps:
        return options.max_steps
    per_epoch = math.ceil(math.ceil(n_examples / options.batch_size) / options.grad_accum)
    return max(1, math.ceil(per_epoch * options.epochs))


def train(options: TrainOptions, echo: Echo = print) -> TrainResult:
    """Train with the built-in SFT path; see the module docstring for what is written."""
    import torch

    torch.set_num_threads(options.threads or min(2, os.cpu_count() or 1))
    out = Path(options.output_dir)
    resume_from = _resume_point(out, options.resume)
    base = BaseModelPath.parse(options.model)
    started = time.monotonic()
    tokenizer = load_tokenizer_for(base)
    family = options.template or guess_family(base.display,
                                              getattr(tokenizer, "chat_template", None))
    samples = load_samples(options, echo)
    examples = build_examples(samples, tokenizer, family, options.cutoff_len, echo)
    trained = sum(e.trained_tokens for e in examples)
    total = sum(len(e.input_ids) for e in examples)
    steps = planned_steps(len(examples), options)
    echo(f"{len(examples)} examples, {total} tokens ({trained} trained), template {family}, "
         f"{steps} steps of batch {options.batch_size}×{options.grad_accum}")
    echo(f"loading {base.display} …")
    model = load_model(base, purpose="fine-tune")
    model = _with_lora(model, options)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    where = f" of the last {options.lora_layers} layers" if options.lora_layers else ""
    echo(f"LoRA r={options.lora_r} alpha={options.lora_alpha or 2 * options.lora_r} on "
         f"{options.peft_targets}{where}: {trainable / 1e6:.2f}M trainable parameters "
         f"({time.monotonic() - started:.0f} s to load)")

    out.mkdir(parents=True, exist_ok=True)
    result = TrainResult(out, "builtin", resumed_from=resume_from, examples=len(examples))
    trainer = _trainer(model, tokenizer, examples, options, steps, result, echo)
    if resume_from:
        echo(f"resuming from {resume_from}")
    with quiet_peft():
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    result.steps = trainer.state.global_step
    result.seconds = time.monotonic() - started
    write_json(out / INFO_FILE, {
        "engine": "builtin", "base_model": base.display, "template": family,
        "cutoff_len": options.cutoff_len, "steps": result.steps,
        "first_loss": result.first_loss, "last_loss": result.last_loss,
        "options": asdict(options),
    })
    return result


def _resume_point(out: Path, resume: bool) -> Path | None:
    found = last_checkpoint(out)
    if resume:
        if found is None:
            raise ConfigError(f"--resume: no checkpoint-N folder with trainer_state.json "
                              f"in {out}")
        return found
    if found is not None:
        raise ConfigError(f"{out} already holds {found.name}; pass --resume to continue "
                          "from it, or choose another --output-dir")
    return None


def _with_lora(model: Any, options: TrainOptions) -> Any:
    from peft import LoraConfig, get_peft_model

    layers = None
    if options.lora_layers:
        total = int(getattr(model.config, "num_hidden_layers", 0) or 0)
        if not total:
            raise ConfigError("--lora-layers: the model config has no num_hidden_layers")
        layers = list(range(max(0, total - options.lora_layers), total))
    targets = options.peft_targets
    if targets == "all-linear" and layers is not None:
        targets = _linear_module_names(model)  # peft takes a layer list only with names
    config = LoraConfig(
        r=options.lora_r, lora_alpha=options.lora_alpha or 2 * options.lora_r,
        lora_dropout=options.lora_dropout, target_modules=targets,
        layers_to_transform=layers, task_type="CAUSAL_LM",
    )
    try:
        with quiet_peft():
            return get_peft_model(model, config)
    except ValueError as exc:
        raise ConfigError(f"LoRA targets {options.lora_targets}: {exc}") from exc


def _linear_module_names(model: Any) -> list[str]:
    """Names of the linear layers inside the decoder (what peft's "all-linear" picks)."""
    import torch

    output = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and module is not output})


def _trainer(model: Any, tokenizer: Any, examples: list[Example], options: TrainOptions,
             steps: int, result: TrainResult, echo: Echo) -> Any:
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def collate(rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        return {k: torch.tensor(v) for k, v in pad_batch(rows, pad_id).items()}

    args = TrainingArguments(
        output_dir=str(options.output_dir),
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        learning_rate=options.learning_rate,
        lr_scheduler_type=options.lr_scheduler,
        warmup_steps=options.warmup_steps,
        num_train_epochs=options.epochs,
        max_steps=steps,
        logging_steps=options.logging_steps,
        save_strategy="steps",
        save_steps=options.save_steps or steps,
        save_total_limit=options.save_total_limit,
        seed=options.seed,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    dataset = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(_log_callback(Path(options.output_dir) / LOG_FILE, result, echo))
    return trainer


def _log_callback(path: Path, result: TrainResult, echo: Echo) -> Any:
    from transformers import TrainerCallback

    class LossLog(TrainerCallback):  # type: ignore[misc]
        """One console line and one JSON line per logging step."""

        def __init__(self) -> None:
            self.started = time.monotonic()
            self.first_step: int | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if not logs or "loss" not in logs:
                if logs and "train_runtime" in logs:
                    echo(f"done: {state.global_step} steps in {logs['train_runtime']:.1f} s")
                return
            if self.first_step is None:
                self.first_step = state.global_step - args.logging_steps
            elapsed = time.monotonic() - self.started
            per_step = elapsed / max(1, state.global_step - self.first_step)
            record = {
                "step": state.global_step, "max_steps": state.max_steps,
                "epoch": round(state.epoch or 0.0, 3), "loss": round(float(logs["loss"]), 5),
                "learning_rate": logs.get("learning_rate"),
                "grad_norm": _round(logs.get("grad_norm")),
                "elapsed_s": round(elapsed, 2), "s_per_step": round(per_step, 2),
            }
            result.losses.append(record["loss"])
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            lr = record["learning_rate"]
            echo(f"step {state.global_step}/{state.max_steps}  loss {record['loss']:.4f}  "
                 f"lr {lr if lr is None else f'{lr:.2e}'}  epoch {record['epoch']:.2f}  "
                 f"{per_step:.1f} s/step")

    return LossLog()


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)
