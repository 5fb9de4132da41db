"""Supervised examples: a sample rendered with its family's template, loss on responses only.

Pure functions over a tokenizer (anything callable like an HF tokenizer); no torch here, so
the masking rules are tested without a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.errors import ConfigError
from finetune.samples import Message, Role, Sample
from finetune.templates import ChatTemplate

IGNORE_INDEX = -100  # labels with this value add nothing to the loss (PyTorch's default)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def segments(
    template: ChatTemplate,
    messages: Sequence[Message],
    system: str = "",
    *,
    eos: str = "</s>",
) -> list[tuple[str, bool]]:
    """The text ``template.render`` produces, cut into (piece, trained) pairs.

    An assistant turn's content and its end marker are trained, so the model learns both
    the answer and when to stop; its header, and everything the user or a tool wrote, are
    context only. Every assistant turn is trained, like LLaMA-Factory's default
    (``mask_history: false``).
    """
    def f(text: str) -> str:
        return text.replace("{eos}", eos)

    out: list[tuple[str, bool]] = []

    def add(text: str, trained: bool) -> None:
        if not text:
            return
        if out and out[-1][1] == trained:
            out[-1] = (out[-1][0] + text, trained)
        else:
            out.append((text, trained))

    system = system or template.default_system
    add(f(template.prefix), False)
    if system:
        add(f(template.system[0]) + system + f(template.system[1]), False)
    for message in messages:
        if message.role is Role.USER:
            add(f(template.user[0]) + message.content + f(template.user[1]), False)
        elif message.role is Role.OBSERVATION:
            add(f(template.observation[0]) + message.content + f(template.observation[1]),
                False)
        elif message.role in (Role.ASSISTANT, Role.FUNCTION):
            add(f(template.assistant_header), False)
            add(message.content + f(template.assistant_end), True)
    return out


@dataclass(frozen=True)
class Example:
    """One training row: token ids, and labels with context positions masked out."""

    index: int  # row index in the data file
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def encode_sample(
    sample: Sample,
    tokenizer: Any,
    template: ChatTemplate,
    cutoff_len: int,
) -> Example | None:
    """Tokenize ``sample`` piece by piece and mask every untrained piece with -100.

    Pieces are encoded separately (as LLaMA-Factory does), so a token never straddles the
    boundary between prompt and response. Longer rows are cut at ``cutoff_len``; a row
    whose responses fall entirely past the cut trains on nothing and gives None.
    """
    if cutoff_len <= 0:
        raise ConfigError("cutoff_len must be positive")
    if sample.chosen is not None:
        raise ConfigError(f"row {sample.index} is a ranking (chosen/rejected) row; "
                          "supervised fine-tuning needs a prompt and one response")
    eos = getattr(tokenizer, "eos_token", None) or "</s>"
    input_ids: list[int] = []
    labels: list[int] = []
    for text, trained in segments(template, sample.messages, sample.system, eos=eos):
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    truncated = len(input_ids) > cutoff_len
    example = Example(sample.index, input_ids[:cutoff_len], labels[:cutoff_len], truncated)
    return example if example.trained_tokens else None


def pad_batch(
    examples: Sequence[dict[str, list[int]]], pad_id: int
) -> dict[str, list[list[int]]]:
    """Right-pad a batch: ids with ``pad_id``, labels with -100, attention mask 1/0."""
    width = max(len(e["input_ids"]) for e in examples)
    batch: dict[str, list[list[int]]] = {"input_ids": [], "labels": [], "attention_mask": []}
    for e in examples:
        gap = width - len(e["input_ids"])
        batch["input_ids"].append(list(e["input_ids"]) + [pad_id] * gap)
        batch["labels"].append(list(e["labels"]) + [IGNORE_INDEX] * gap)
        batch["attention_mask"].append([1] * len(e["input_ids"]) + [0] * gap)
    return batch


def checkpoints(output_dir: str | Path) -> list[Path]:
    """``checkpoint-N`` folders under ``output_dir``, oldest step first.

    Sorted by the step number, not by name: checkpoint-10 comes after checkpoint-9.
    Folders without ``trainer_state.json`` are skipped: a save interrupted half-way
    cannot be resumed from.
    """
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def last_checkpoint(output_dir: str | Path) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None
