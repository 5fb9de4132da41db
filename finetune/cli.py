"""``ragate finetune``: commands that parse options and call the finetune library."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from finetune.convert import TARGETS, convert_file
from finetune.datasets import ValidationReport, validate_dataset, write_clean
from finetune.errors import FinetuneError
from finetune.files import read_rows
from finetune.gguf import CONVERTER_TYPES, QUANT_TYPES
from finetune.llamafactory import dataset_dir_of, register_dataset
from finetune.memory import (
    SERVE_BYTES,
    TRAIN_METHODS,
    kv_capacity_tokens,
    serving_estimate,
    suggest,
    training_estimate,
)
from finetune.shapes import resolve_shape
from finetune.spec import FORMATTINGS, detect_spec
from finetune.templates import FAMILIES, guess_family
from finetune.tokenstats import load_tokenizer
from finetune.train import ENGINES
from finetune.trainconfig import METHODS, Launch, TrainConfig, write_training_config

BAR_THRESHOLD = 1000  # rows; smaller files finish before a bar would help


class _Errors(click.Group):
    """Turn library errors into one-line messages (exit status 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FinetuneError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Errors)
def finetune() -> None:
    """Prepare, check and size LLaMA-Factory fine-tuning runs."""


@finetune.command()
@click.argument("data", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dataset-info", type=click.Path(dir_okay=False, path_type=Path),
              help="dataset_info.json whose entry describes DATA.")
@click.option("--name", help="Entry name in --dataset-info.")
@click.option("--tokenizer", type=click.Path(exists=True, path_type=Path),
              help="HF folder, tokenizer.json or .gguf for token checks.")
@click.option("--cutoff-len", default=2048, show_default=True, type=click.IntRange(min=1))
@click.option("--template", type=click.Choice(FAMILIES), default=None,
              help="Chat template family for token counts (default: guessed from --tokenizer).")
@click.option("--write-clean", "clean_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the rows without errors and duplicates here (.json/.jsonl).")
@click.option("--max-issues", default=50, show_default=True, help="Issues to print (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate(data: Path | None, dataset_info: Path | None, name: str | None,
             tokenizer: Path | None, cutoff_len: int, template: str | None,
             clean_out: Path | None, max_issues: int, as_json: bool) -> None:
    """Check DATA against LLaMA-Factory's rules; exit 1 if any row has an error."""
    tok = load_tokenizer(tokenizer) if tokenizer else None
    family = template or (guess_family(str(tokenizer), getattr(tok, "chat_template", None))
                          if tokenizer else "default")
    with ExitStack() as stack:
        bar: dict[str, Any] = {}

        def on_start(total: int) -> None:
            if total >= BAR_THRESHOLD and not as_json:
                bar["bar"] = stack.enter_context(
                    click.progressbar(length=total, label="validating", file=sys.stderr))

        def progress(done: int) -> None:
            if "bar" in bar:
                bar["bar"].update(done)

        report = validate_dataset(data, dataset_info=dataset_info, name=name, tokenizer=tok,
                                  cutoff_len=cutoff_len, template=family,
                                  progress=progress, on_start=on_start)
    written = None
    if clean_out:
        written = write_clean(report, clean_out)
    if as_json:
        out = report.summary() | {"issues": [vars(i) | {"severity": str(i.severity)}
                                             for i in report.issues]}
        if written:
            out["clean"] = {"path": str(written[0]), "rows": written[1]}
        click.echo(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        _print_report(report, max_issues)
        if written:
            click.echo(f"wrote {written[1]} clean rows to {written[0]}")
    if not report.ok:
        sys.exit(1)


def _print_report(report: ValidationReport, max_issues: int) -> None:
    summary = report.summary()
    how = "detected" if report.detected else "from dataset_info.json"
    click.echo(f"{summary['file']}: {summary['format']} ({how}), {summary['rows']} rows, "
               f"{summary['valid_rows']} valid, {summary['errors']} errors, "
               f"{summary['warnings']} warnings")
    if report.detected:
        click.echo("entry: " + json.dumps(report.spec.to_entry(), ensure_ascii=False))
    if report.lengths:
        lengths = report.lengths.as_dict()
        click.echo("tokens: " + ", ".join(f"{k}={v}" for k, v in lengths.items()))
    if report.unknown_chars:
        click.echo("unknown characters: " + " ".join(repr(c) for c in report.unknown_chars))
    shown = report.issues if max_issues == 0 else report.issues[:max_issues]
    for issue in shown:
        click.echo(f"  {issue}")
    if len(shown) < len(report.issues):
        click.echo(f"  … {len(report.issues) - len(shown)} more (--max-issues 0 shows all)")


@finetune.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "target", type=click.Choice(TARGETS), required=True)
@click.option("--dataset-info", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Entry name in --dataset-info describing SRC.")
def convert(src: Path, dst: Path, target: str, dataset_info: Path | None,
            name: str | None) -> None:
    """Convert SRC to alpaca, sharegpt or OpenAI messages; print the dataset_info entry."""
    result = convert_file(src, dst, target, dataset_info=dataset_info, name=name)
    click.echo(f"wrote {len(result.rows)} rows to {result.path}")
    click.echo("entry: " + json.dumps(result.spec.to_entry(), ensure_ascii=False))
    for issue in result.skipped:
        click.echo(f"  skipped {issue}")


def _json_object(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise click.BadParameter("expected a JSON object")
    return parsed


@finetune.command()
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dataset-info", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--name", required=True)
@click.option("--formatting", type=click.Choice(FORMATTINGS), default=None,
              help="Override the detected formatting.")
@click.option("--columns", callback=_json_object,
              help="JSON column mapping, LLaMA-Factory's names to DATA's fields, e.g. "
                   '\'{"prompt": "question", "response": "answer"}\'; it replaces every default '
                   "column and decides the format (messages: sharegpt, else alpaca).")
@click.option("--tags", callback=_json_object,
              help="JSON tag mapping for sharegpt/openai messages.")
@click.option("--ranking/--no-ranking", default=None)
@click.option("--no-overwrite", is_flag=True, help="Fail if the entry exists.")
def register(data: Path, dataset_info: Path, name: str, formatting: str | None,
             columns: dict[str, Any] | None, tags: dict[str, Any] | None,
             ranking: bool | None, no_overwrite: bool) -> None:
    """Add or update DATA's entry in a dataset_info.json, then validate through it."""
    spec = detect_spec(read_rows(data), formatting=formatting, columns=columns, tags=tags,
                       ranking=ranking)
    entry, report = register_dataset(dataset_info, name, data, spec=spec,
                                     overwrite=not no_overwrite)
    click.echo(f"{name}: " + json.dumps(entry, ensure_ascii=False))
    click.echo(f"dataset_dir: {dataset_dir_of(dataset_info)}")
    _print_report(report, 20)
    if not report.ok:
        sys.exit(1)


@finetune.command()
@click.option("--model", required=True, help="Base model path (model_name_or_path).")
@click.option("--dataset", required=True, help="Dataset name(s) in dataset_info.json.")
@click.option("--dataset-info", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True)
@click.option("--output-dir", required=True, help="Where LLaMA-Factory saves checkpoints.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("train.yaml"), show_default=True, help="YAML file to write.")
@click.option("--method", type=click.Choice(METHODS), default="lora", show_default=True)
@click.option("--template", type=click.Choice(FAMILIES), default=None,
              help="Template family (default: guessed from --model).")
@click.option("--cutoff-len", default=2048, show_default=True, type=int)
@click.option("--epochs", default=3.0, show_default=True, type=float)
@click.option("--learning-rate", type=float, default=None)
@click.option("--batch-size", default=1, show_default=True, type=int)
@click.option("--grad-accum", default=8, show_default=True, type=int)
@click.option("--lora-rank", default=8, show_default=True, type=int)
@click.option("--quantization-bit", type=click.Choice(["4", "8"]), default="4",
              show_default=True)
@click.option("--deepspeed", "zero", type=click.Choice(["0", "2", "3"]), default=None,
              help="Write a ZeRO config of this stage and use it.")
@click.option("--offload", is_flag=True, help="DeepSpeed CPU offload (stage 2/3).")
@click.option("--bf16/--no-bf16", default=True, show_default=True)
@click.option("--pure-bf16", is_flag=True, help="Full tuning with bf16 weights and optimizer.")
@click.option("--max-samples", type=int, default=None)
@click.option("--nnodes", default=1, show_default=True, type=int)
@click.option("--nproc-per-node", type=int, default=None)
@click.option("--master-addr", default="127.0.0.1", show_default=True)
@click.option("--master-port", default=29500, show_default=True, type=int)
def config(model: str, dataset: str, dataset_info: Path, output_dir: str, out_path: Path,
           method: str, template: str | None, cutoff_len: int, epochs: float,
           learning_rate: float | None, batch_size: int, grad_accum: int, lora_rank: int,
           quantization_bit: str, zero: str | None, offload: bool, bf16: bool,
           pure_bf16: bool, max_samples: int | None, nnodes: int,
           nproc_per_node: int | None, master_addr: str, master_port: int) -> None:
    """Write a LLaMA-Factory training YAML and print the command that launches it."""
    cfg = TrainConfig(
        model=model, dataset=dataset, dataset_dir=dataset_dir_of(dataset_info),
        output_dir=output_dir, method=method, template=template or guess_family(model),
        cutoff_len=cutoff_len, epochs=epochs, learning_rate=learning_rate,
        batch_size=batch_size, grad_accum=grad_accum, lora_rank=lora_rank,
        quantization_bit=int(quantization_bit), deepspeed=int(zero) if zero else None,
        offload=offload, bf16=bf16, pure_bf16=pure_bf16, max_samples=max_samples,
    )
    launch = Launch(nnodes=nnodes, nproc_per_node=nproc_per_node, master_addr=master_addr,
                    master_port=master_port)
    yaml_path, ds_path, commands = write_training_config(cfg, out_path, launch)
    click.echo(f"wrote {yaml_path} (template {cfg.llamafactory_template})")
    if ds_path:
        click.echo(f"wrote {ds_path}")
    for rank, command in enumerate(commands):
        prefix = f"# node {rank}\n" if len(commands) > 1 else ""
        click.echo(prefix + command)


@finetune.command()
@click.argument("model")
@click.option("--method", type=click.Choice(TRAIN_METHODS), default=None,
              help="One method (default: all).")
@click.option("--gpus", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--zero", type=click.Choice(["0", "1", "2", "3"]), default=None)
@click.option("--seq-len", default=1024, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--lora-rank", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--gpu-gb", type=float, default=None, help="Suggest a method and GPU count.")
@click.option("--max-gpus", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--serve", "serve_dtype", type=click.Choice(sorted(SERVE_BYTES)), default=None,
              help="Estimate serving in this weight format instead of training.")
@click.option("--context", default=4096, show_default=True, type=click.IntRange(min=1))
@click.option("--concurrency", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--tp", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True)
def estimate(model: str, method: str | None, gpus: int, zero: str | None, seq_len: int,
             batch_size: int, lora_rank: int, gpu_gb: float | None, max_gpus: int,
             serve_dtype: str | None, context: int, concurrency: int, tp: int,
             as_json: bool) -> None:
    """Estimate GPU memory for MODEL (a preset such as llama3-8b, 7b, or a config.json)."""
    shape = resolve_shape(model)
    out: dict[str, Any] = {"model": shape.name, "params_b": round(shape.params / 1e9, 3)}
    if serve_dtype:
        est = serving_estimate(shape, serve_dtype, context=context, concurrency=concurrency,
                               tensor_parallel=tp)
        out["serving"] = {"per_gpu_gb": round(est.total_gb, 2), "parts": est.breakdown_gb(),
                          "kv_bytes_per_token": shape.kv_bytes_per_token()}
        if gpu_gb:
            out["serving"]["kv_capacity_tokens"] = kv_capacity_tokens(
                shape, gpu_gb, serve_dtype, tensor_parallel=tp)
    else:
        stage = int(zero) if zero else None
        rows = {}
        for name in ([method] if method else list(TRAIN_METHODS)):
            est = training_estimate(shape, name, gpus=gpus, zero_stage=stage,
                                    batch_size=batch_size, seq_len=seq_len, lora_rank=lora_rank)
            rows[name] = {"per_gpu_gb": round(est.total_gb, 2), "zero_stage": est.zero_stage,
                          "parts": est.breakdown_gb()}
        out["training"] = rows
        if gpu_gb:
            advice = suggest(shape, gpu_gb, max_gpus=max_gpus, batch_size=batch_size,
                             seq_len=seq_len, lora_rank=lora_rank)
            out["suggestion"] = {
                "recommended": vars(advice.recommended) if advice.recommended else None,
                "options": [vars(o) for o in advice.options],
            }
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    _print_estimate(out, gpus)


def _print_estimate(out: dict[str, Any], gpus: int) -> None:
    click.echo(f"{out['model']}: {out['params_b']} B parameters")
    if "serving" in out:
        serving = out["serving"]
        click.echo(f"serving: {serving['per_gpu_gb']} GB per GPU "
                   f"(KV {serving['kv_bytes_per_token'] / 1024:.0f} KiB/token)")
        for part, value in serving["parts"].items():
            click.echo(f"  {part:32} {value:8.2f} GB")
        if "kv_capacity_tokens" in serving:
            click.echo(f"  KV cache capacity: {serving['kv_capacity_tokens']} tokens")
        return
    click.echo(f"training, per GPU ({gpus} GPU{'s' if gpus > 1 else ''}):")
    for name, row in out["training"].items():
        click.echo(f"  {name:10} {row['per_gpu_gb']:8.1f} GB  (ZeRO-{row['zero_stage']})")
    if "suggestion" in out:
        click.echo("fewest GPUs per method:")
        for option in out["suggestion"]["options"]:
            fits = (f"{option['gpus']} GPU(s), ZeRO-{option['zero_stage']}, "
                    f"{option['per_gpu_gb']} GB each") if option["gpus"] else "does not fit"
            click.echo(f"  {option['method']:10} {fits}")
        best = out["suggestion"]["recommended"]
        click.echo(f"suggested: {best['method']} on {best['gpus']} GPU(s)" if best
                   else "suggested: nothing fits; add GPUs or shorten --seq-len")


@finetune.command()
@click.option("--model", help="Base model: an HF folder or a .gguf file.")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path),
              help="Data file (alpaca / sharegpt / OpenAI messages; json, jsonl, csv).")
@click.option("--dataset-info", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="dataset_info.json whose entry (--name) describes the data.")
@click.option("--name", "dataset_name", help="Entry name in --dataset-info.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Adapter, checkpoints, train_log.jsonl and ragate_train.json go here.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
              help="A LLaMA-Factory YAML (from `finetune config`): run llamafactory-cli on it.")
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
              help="auto: LLaMA-Factory when installed and the base is an HF folder, "
                   "else the built-in trainer.")
@click.option("--template", type=click.Choice(FAMILIES), default=None,
              help="Chat template family (default: guessed from the model).")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Stop after this many optimizer steps (bounds the compute).")
@click.option("--epochs", default=3.0, show_default=True, type=click.FloatRange(min=0,
                                                                                min_open=True))
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--grad-accum", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--cutoff-len", default=256, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", "learning_rate", default=2e-4, show_default=True, type=float)
@click.option("--lr-scheduler", default="cosine", show_default=True,
              type=click.Choice(["cosine", "linear", "constant", "constant_with_warmup"]))
@click.option("--warmup-steps", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--lora-r", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--lora-alpha", type=click.IntRange(min=1), default=None,
              help="Default: 2 × r.")
@click.option("--lora-dropout", default=0.0, show_default=True, type=float)
@click.option("--lora-target", default="all", show_default=True,
              help="Comma-separated module names (q_proj,v_proj) or 'all' linear layers.")
@click.option("--lora-layers", type=click.IntRange(min=1), default=None,
              help="Adapt only the last N decoder layers (cheaper steps; default: all).")
@click.option("--logging-steps", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--save-steps", type=click.IntRange(min=1), default=None,
              help="Checkpoint every N steps (default: once, at the end).")
@click.option("--max-samples", type=click.IntRange(min=1), default=None)
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: min(2, cores)).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint-N.")
@click.option("--allow-invalid", is_flag=True, help="Train on the valid rows of bad data.")
def train(model: str | None, data: Path | None, dataset_info: Path | None,
          dataset_name: str | None, output_dir: Path | None, config_path: Path | None,
          engine: str, template: str | None, max_steps: int | None, epochs: float,
          batch_size: int, grad_accum: int, cutoff_len: int, learning_rate: float,
          lr_scheduler: str, warmup_steps: int, lora_r: int, lora_alpha: int | None,
          lora_dropout: float, lora_target: str, lora_layers: int | None,
          logging_steps: int, save_steps: int | None, max_samples: int | None, seed: int,
          threads: int | None, resume: bool, allow_invalid: bool) -> None:
    """Train a LoRA adapter (LLaMA-Factory if installed, else the built-in CPU trainer)."""
    from finetune import train as training

    if config_path:
        sys.exit(training.run_llamafactory(config_path, echo=click.echo))
    if not model or not output_dir or not (data or dataset_info):
        raise click.UsageError("--model, --output-dir and --data (or --dataset-info/--name) "
                               "are required without --config")
    options = training.TrainOptions(
        model=model, data=str(data) if data else None, output_dir=str(output_dir),
        dataset_info=str(dataset_info) if dataset_info else None, dataset_name=dataset_name,
        template=template, max_steps=max_steps, epochs=epochs, batch_size=batch_size,
        grad_accum=grad_accum, cutoff_len=cutoff_len, learning_rate=learning_rate,
        lr_scheduler=lr_scheduler, warmup_steps=warmup_steps, lora_r=lora_r,
        lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        lora_targets=[t.strip() for t in lora_target.split(",") if t.strip()],
        lora_layers=lora_layers,
        logging_steps=logging_steps, save_steps=save_steps, max_samples=max_samples,
        seed=seed, threads=threads, resume=resume, allow_invalid=allow_invalid,
    )
    chosen = training.choose_engine(engine, options)
    if chosen == "llamafactory":
        yaml_path = training.write_llamafactory_config(options, echo=click.echo)
        sys.exit(training.run_llamafactory(yaml_path, echo=click.echo))
    result = training.train(options, echo=click.echo)
    if result.losses:
        click.echo(f"loss {result.first_loss:.4f} -> {result.last_loss:.4f} over "
                   f"{result.steps} steps ({result.seconds:.0f} s); adapter in "
                   f"{result.output_dir}; log {result.output_dir / training.LOG_FILE}")


@finetune.command("export")
@click.argument("model", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path),
              required=True)
@click.option("--base", help="Base model (HF folder or .gguf); default: the one the adapter "
                             "was trained on.")
@click.option("--template", type=click.Choice(FAMILIES), default=None,
              help="Default: the family recorded at training, else guessed.")
@click.option("--name", help="GGUF file name stem (default: the output folder name).")
@click.option("--outtype", type=click.Choice(CONVERTER_TYPES), default="f16",
              show_default=True, help="convert_hf_to_gguf.py --outtype.")
@click.option("--quantize", type=click.Choice(QUANT_TYPES), default=None,
              help="Also quantize with llama.cpp's quantizer (via llama-cpp-python).")
@click.option("--gguf/--no-gguf", default=True, show_default=True,
              help="--no-gguf: merge only.")
@click.option("--llama-cpp-dir", type=click.Path(exists=True, file_okay=False),
              help="A llama.cpp checkout with convert_hf_to_gguf.py "
                   "(default: $RAGATE_LLAMA_CPP_DIR, then the cached llama-cpp-python sdist).")
@click.option("--download", "allow_download", is_flag=True,
              help="If no converter is found, `pip download` the llama-cpp-python sdist.")
@click.option("--system", help="Modelfile SYSTEM (default: the family's; '' for none).")
@click.option("--num-ctx", type=click.IntRange(min=1), default=None,
              help="Modelfile num_ctx (default: the model's context, at most 4096).")
@click.option("--keep-chat-template", is_flag=True,
              help="Keep the tokenizer's chat template instead of the family's.")
@click.option("--threads", type=click.IntRange(min=1), default=None)
def export_cmd(model: Path, output_dir: Path, base: str | None, template: str | None,
               name: str | None, outtype: str, quantize: str | None, gguf: bool,
               llama_cpp_dir: str | None, allow_download: bool, system: str | None,
               num_ctx: int | None, keep_chat_template: bool, threads: int | None) -> None:
    """Merge the LoRA adapter in MODEL into its base, convert to GGUF, write a Modelfile."""
    from finetune.export import ExportOptions, export

    result = export(ExportOptions(
        model=str(model), output_dir=str(output_dir), base=base, template=template,
        name=name, outtype=outtype, quantize=quantize, gguf=gguf, llama_cpp_dir=llama_cpp_dir,
        allow_download=allow_download, system=system, num_ctx=num_ctx,
        keep_chat_template=keep_chat_template, threads=threads,
    ), echo=click.echo)
    if result.gguf:
        click.echo(f"gguf: {result.gguf}")
