"""Token-level checks of a dataset: lengths against cutoff_len and text the tokenizer loses."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.errors import TokenizerError
from finetune.samples import Issue, Sample, Severity
from finetune.templates import ChatTemplate


def load_tokenizer(path: str | Path) -> Any:
    """A tokenizer from a local path, never the network.

    Accepts an HF folder, a ``tokenizer.json`` file, or a ``.gguf`` file (transformers
    reads the vocabulary out of the GGUF).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise TokenizerError(f"tokenizer path not found: {path}")
    try:
        from transformers import AutoTokenizer, PreTrainedTokenizerFast
    except ImportError as exc:
        hint = "transformers is not installed: pip install 'ragate[finetune]'"
        raise TokenizerError(hint) from exc
    try:
        if path.is_file() and path.suffix == ".gguf":
            return AutoTokenizer.from_pretrained(
                str(path.parent), gguf_file=path.name, local_files_only=True
            )
        if path.is_file() and path.name.endswith(".json"):
            return PreTrainedTokenizerFast(tokenizer_file=str(path))
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, ImportError) as exc:
        raise TokenizerError(f"cannot load a tokenizer from {path}: {exc}") from exc


@dataclass
class LengthStats:
    cutoff_len: int
    count: int = 0
    min: int = 0
    max: int = 0
    mean: float = 0.0
    p50: int = 0
    p95: int = 0
    truncated: list[int] = field(default_factory=list)  # row indices longer than cutoff_len

    def as_dict(self) -> dict[str, Any]:
        return {
            "cutoff_len": self.cutoff_len, "count": self.count, "min": self.min,
            "max": self.max, "mean": round(self.mean, 1), "p50": self.p50, "p95": self.p95,
            "truncated": len(self.truncated),
        }


@dataclass
class TokenReport:
    lengths: LengthStats
    unknown_chars: dict[str, list[int]]  # character -> rows that contain it
    issues: list[Issue]


def token_report(
    samples: Sequence[Sample],
    tokenizer: Any,
    template: ChatTemplate,
    cutoff_len: int,
    *,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> TokenReport:
    """Tokenize every sample as it will be trained (rendered with ``template``).

    Text that the tokenizer maps to its unknown token trains the model on ``<unk>``;
    the characters responsible are found by encoding each distinct character once.
    """
    eos = tokenizer.eos_token or "</s>"
    texts = [
        template.render(sample.messages + ([sample.chosen] if sample.chosen else []),
                        sample.system, eos=eos)
        for sample in samples
    ]
    lengths: list[int] = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        encoded = tokenizer(chunk, add_special_tokens=False)["input_ids"]
        lengths += [len(ids) for ids in encoded]
        if progress:
            progress(len(chunk))
    stats = _length_stats(samples, lengths, cutoff_len)
    issues = [
        Issue(samples[i].index, Severity.WARNING, "truncated",
              f"{length} tokens > cutoff_len {cutoff_len}; the end of the answer is cut")
        for i, length in enumerate(lengths)
        if length > cutoff_len
    ]
    unknown = _unknown_characters(samples, tokenizer)
    for char, rows in unknown.items():
        for index in rows:
            issues.append(Issue(index, Severity.ERROR, "unknown-token",
                                f"{char!r} (U+{ord(char):04X}) maps to the unknown token"))
    return TokenReport(stats, unknown, issues)


def _length_stats(samples: Sequence[Sample], lengths: list[int], cutoff_len: int) -> LengthStats:
    stats = LengthStats(cutoff_len=cutoff_len, count=len(lengths))
    if not lengths:
        return stats
    ordered = sorted(lengths)
    stats.min, stats.max = ordered[0], ordered[-1]
    stats.mean = sum(ordered) / len(ordered)
    stats.p50 = ordered[len(ordered) // 2]
    stats.p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    stats.truncated = [samples[i].index for i, n in enumerate(lengths) if n > cutoff_len]
    return stats


def _unknown_characters(samples: Sequence[Sample], tokenizer: Any) -> dict[str, list[int]]:
    unk_id = getattr(tokenizer, "unk_token_id", None)
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    rows_by_char: dict[str, list[int]] = {}
    for sample in samples:
        parts = [m.content for m in sample.messages] + [sample.system]
        if sample.chosen:
            parts.append(sample.chosen.content)
        if sample.rejected:
            parts.append(sample.rejected.content)
        for char in set("".join(parts)):
            rows_by_char.setdefault(char, []).append(sample.index)
    chars = sorted(c for c in rows_by_char if not c.isspace())
    if not chars:
        return {}
    encoded = tokenizer(chars, add_special_tokens=False)["input_ids"]
    unknown: dict[str, list[int]] = {}
    for char, ids in zip(chars, encoded, strict=True):
        lost = unk_id is not None and unk_id in ids and char not in special
        if not lost:
            # Tokenizers without an unknown token can still drop text silently.
            decoded = tokenizer.decode(ids, skip_special_tokens=False)
            lost = char not in decoded
        if lost:
            unknown[char] = rows_by_char[char]
    return unknown
