"""Export a fine-tuned model: merge LoRA into the base, convert to GGUF, write a Modelfile.

Output folder layout::

    OUT/hf/                  merged Hugging Face model + tokenizer (chat template = family)
    OUT/NAME-f16.gguf        convert_hf_to_gguf.py output (--outtype)
    OUT/NAME-q4_k_m.gguf     with --quantize
    OUT/Modelfile            FROM the last GGUF, TEMPLATE/stop/SYSTEM/num_ctx of the family
    OUT/export.json          what was done, for scripts

The merged tokenizer's chat template is replaced by the family's (templates.py), so the
GGUF carries the exact prompt format the adapter was trained with, and llama.cpp applies it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.errors import ConfigError
from finetune.files import write_json
from finetune.gguf import convert_to_gguf, find_converter, quantize_gguf
from finetune.modelfile import write_modelfile
from finetune.models import BaseModelPath, load_model, load_tokenizer_for, quiet_peft
from finetune.templates import FAMILIES, guess_family, template_for
from finetune.train import INFO_FILE

Echo = Callable[[str], None]
DEFAULT_NUM_CTX_CAP = 4096  # Ollama allocates the KV cache for num_ctx up front


@dataclass
class ExportOptions:
    model: str  # a training output (adapter) folder, a checkpoint-N, or a full model folder
    output_dir: str
    base: str | None = None  # default: ragate_train.json, then adapter_config.json
    template: str | None = None
    name: str | None = None  # GGUF file stem; default: the output folder's name
    outtype: str = "f16"
    quantize: str | None = None
    gguf: bool = True
    llama_cpp_dir: str | None = None
    allow_download: bool = False
    system: str | None = None  # Modelfile SYSTEM; None: the family's default
    num_ctx: int | None = None
    keep_chat_template: bool = False
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.template is not None and self.template not in FAMILIES:
            raise ConfigError(f"unknown template {self.template!r}; known: {list(FAMILIES)}")
        if self.num_ctx is not None and self.num_ctx <= 0:
            raise ConfigError("num_ctx must be positive")


@dataclass
class ExportResult:
    output_dir: Path
    hf_dir: Path
    base: str | None
    template: str
    ggufs: list[Path] = field(default_factory=list)
    modelfile: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def gguf(self) -> Path | None:
        return self.ggufs[-1] if self.ggufs else None


@dataclass(frozen=True)
class Source:
    """What ``model`` is: an adapter on a base, or a full model."""

    adapter: Path | None
    base: BaseModelPath
    template: str | None  # recorded at training time, if known


def resolve_source(model: str | Path, base: str | None = None) -> Source:
    """Find the base of an adapter folder (or accept a full model folder as is)."""
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{path} is not a folder (expected the output of finetune train)")
    info = _json(path / INFO_FILE) or _json(path.parent / INFO_FILE)
    adapter_config = _json(path / "adapter_config.json")
    if adapter_config is None:
        if (path / "config.json").is_file():
            return Source(None, BaseModelPath.parse(path), info.get("template") if info else None)
        raise ConfigError(f"{path} holds neither adapter_config.json (a LoRA adapter) nor "
                          "config.json (a full model)")
    recorded = (info or {}).get("base_model") or adapter_config.get("base_model_name_or_path")
    chosen = base or recorded
    if not chosen:
        raise ConfigError(f"{path}: the adapter does not name its base model; pass --base")
    try:
        base_path = BaseModelPath.parse(chosen)
    except ConfigError as exc:
        raise ConfigError(f"base model of {path}: {exc}; pass --base") from exc
    return Source(path, base_path, (info or {}).get("template"))


def _json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else None


def merge(source: Source, hf_dir: Path, family: str | None, *, keep_chat_template: bool,
          echo: Echo = print) -> tuple[Any, Any, str]:
    """Load the base, merge the adapter into it, save model + tokenizer to ``hf_dir``."""
    echo(f"loading base {source.base.display} …")
    model = load_model(source.base, purpose="merge a LoRA adapter into")
    tokenizer_from = source.adapter if source.adapter and \
        (source.adapter / "tokenizer_config.json").is_file() else None
    tokenizer = load_tokenizer_for(BaseModelPath(tokenizer_from.resolve()) if tokenizer_from
                                   else source.base)
    family = family or source.template or guess_family(
        source.base.display, getattr(tokenizer, "chat_template", None))
    if source.adapter is not None:
        from peft import PeftModel

        echo(f"merging {source.adapter} …")
        with quiet_peft():
            model = PeftModel.from_pretrained(model, str(source.adapter)).merge_and_unload()
    if not keep_chat_template:
        tokenizer.chat_template = template_for(family).jinja(tokenizer.eos_token or "</s>")
    hf_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(hf_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(hf_dir))
    return model, tokenizer, family


def export(options: ExportOptions, echo: Echo = print) -> ExportResult:
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)
    out = Path(options.output_dir)
    source = resolve_source(options.model, options.base)
    converter = find_converter(options.llama_cpp_dir, allow_download=options.allow_download) \
        if options.gguf else None  # found before the slow merge, so a missing one fails fast
    hf_dir = out / "hf"
    started = time.monotonic()
    model, tokenizer, family = merge(source, hf_dir, options.template,
                                     keep_chat_template=options.keep_chat_template, echo=echo)
    result = ExportResult(out, hf_dir, source.base.display, family)
    result.seconds["merge"] = round(time.monotonic() - started, 1)
    echo(f"wrote {hf_dir} ({result.seconds['merge']} s)")
    name = options.name or out.resolve().name
    if converter is not None:
        started = time.monotonic()
        echo(f"converting with {converter.converter} ({converter.origin}) …")
        f16 = convert_to_gguf(converter, hf_dir, out / f"{name}-{options.outtype}.gguf",
                              options.outtype)
        result.ggufs.append(f16)
        result.seconds["convert"] = round(time.monotonic() - started, 1)
        echo(f"wrote {f16} ({f16.stat().st_size / 1e6:.0f} MB, {result.seconds['convert']} s)")
        if options.quantize:
            started = time.monotonic()
            quantized = quantize_gguf(f16, out / f"{name}-{options.quantize}.gguf",
                                      options.quantize, threads=options.threads or 2)
            result.ggufs.append(quantized)
            result.seconds["quantize"] = round(time.monotonic() - started, 1)
            echo(f"wrote {quantized} ({quantized.stat().st_size / 1e6:.0f} MB, "
                 f"{result.seconds['quantize']} s)")
        num_ctx = options.num_ctx or min(
            int(getattr(model.config, "max_position_embeddings", 0) or DEFAULT_NUM_CTX_CAP),
            DEFAULT_NUM_CTX_CAP)
        gguf = result.ggufs[-1]
        result.modelfile = write_modelfile(
            out / "Modelfile", f"./{gguf.name}", family, system=options.system,
            num_ctx=num_ctx, eos=tokenizer.eos_token or "</s>")
        echo(f"wrote {result.modelfile} (template {family}, num_ctx {num_ctx}); "
             f"ollama create {name} -f {result.modelfile}")
    write_json(out / "export.json", {
        "base": result.base, "adapter": str(source.adapter) if source.adapter else None,
        "template": family, "hf_dir": str(hf_dir), "ggufs": [str(p) for p in result.ggufs],
        "modelfile": str(result.modelfile) if result.modelfile else None,
        "seconds": result.seconds,
    })
    return result
