"""Ollama Modelfiles whose TEMPLATE and stop words match the family the model was trained in.

An imported GGUF without a TEMPLATE is prompted with raw text and answers badly; without
the family's stop words it runs on past the end of its turn.
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune.errors import ConfigError
from finetune.templates import ChatTemplate, template_for


def modelfile_text(
    model: str | Path,
    family: str | ChatTemplate,
    *,
    system: str | None = None,
    num_ctx: int | None = None,
    eos: str = "</s>",
    parameters: dict[str, str | int | float] | None = None,
    adapter: str | Path | None = None,
) -> str:
    """The Modelfile for ``model`` (a GGUF path, or an Ollama model to build on).

    ``system`` defaults to the family's default system prompt; pass "" for none.
    """
    template = family if isinstance(family, ChatTemplate) else template_for(family)
    if num_ctx is not None and num_ctx <= 0:
        raise ConfigError("num_ctx must be positive")
    lines = [f"FROM {model}"]
    if adapter:
        lines.append(f"ADAPTER {adapter}")
    lines.append(f'TEMPLATE """{_triple_quoted(template.ollama_template(eos))}"""')
    system_text = template.default_system if system is None else system
    if system_text:
        lines.append(f'SYSTEM """{_triple_quoted(system_text)}"""')
    for stop in template.stop_words(eos):
        # JSON quoting is what Ollama's parser accepts for strings with specials.
        lines.append(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}")
    if num_ctx:
        lines.append(f"PARAMETER num_ctx {num_ctx}")
    for key, value in (parameters or {}).items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"


def write_modelfile(path: str | Path, model: str | Path, family: str | ChatTemplate,
                    **kwargs: object) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(modelfile_text(model, family, **kwargs), encoding="utf-8")  # type: ignore[arg-type]
    return path


def _triple_quoted(text: str) -> str:
    if '"""' in text:
        raise ConfigError('Modelfile values cannot contain """')
    return text
