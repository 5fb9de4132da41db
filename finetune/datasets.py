"""Validate a fine-tuning dataset row by row and write a cleaned copy.

``validate_dataset`` reads a file, works out its format (from a dataset_info.json entry or
from its keys), applies LLaMA-Factory's rules to every row, finds empty and duplicate
samples, and, with a tokenizer, measures lengths against ``cutoff_len`` and finds text the
tokenizer cannot represent. Every finding names its row.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.errors import DatasetError
from finetune.files import read_rows, write_rows
from finetune.rules import check_row
from finetune.samples import Issue, Sample, Severity
from finetune.spec import DatasetSpec, detect_spec
from finetune.templates import ChatTemplate, template_for
from finetune.tokenstats import LengthStats, token_report


@dataclass
class ValidationReport:
    path: Path
    spec: DatasetSpec
    total: int
    rows: list[Any] = field(repr=False)
    samples: list[Sample] = field(repr=False)
    issues: list[Issue]
    detected: bool  # True when the format was guessed, not read from dataset_info.json
    lengths: LengthStats | None = None
    unknown_chars: dict[str, list[int]] = field(default_factory=dict)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def bad_rows(self) -> list[int]:
        return sorted({i.index for i in self.errors})

    def summary(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "format": self.spec.formatting + (" (ranking)" if self.spec.ranking else ""),
            "detected": self.detected,
            "rows": self.total,
            "valid_rows": self.total - len(self.bad_rows()),
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "by_code": dict(Counter(i.code for i in self.issues)),
            "lengths": self.lengths.as_dict() if self.lengths else None,
            "unknown_chars": sorted(self.unknown_chars),
        }


def spec_from_dataset_info(info_path: str | Path, name: str) -> DatasetSpec:
    """The spec of entry ``name`` in a dataset_info.json file."""
    info_path = Path(info_path)
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read {info_path}: {exc}") from exc
    if name not in info:
        raise DatasetError(f"dataset {name!r} is not defined in {info_path}")
    return DatasetSpec.from_entry(info[name])


def validate_dataset(
    path: str | Path | None = None,
    *,
    spec: DatasetSpec | None = None,
    dataset_info: str | Path | None = None,
    name: str | None = None,
    tokenizer: Any = None,
    cutoff_len: int = 2048,
    template: str | ChatTemplate = "default",
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ValidationReport:
    """Check every row; ``path`` may be omitted when the dataset_info entry names the file.

    ``on_start`` receives the total amount of work once the file is read, and
    ``progress`` the amount just done (rows for the rules, and once more per row when a
    tokenizer is given), so a caller can draw a progress bar.
    """
    detected = False
    if spec is None and dataset_info is not None:
        if name is None:
            raise DatasetError("--name is required with --dataset-info")
        spec = spec_from_dataset_info(dataset_info, name)
        if path is None:
            if not spec.file_name:
                raise DatasetError(f"entry {name!r} has no file_name")
            path = Path(dataset_info).parent / spec.file_name
    if path is None:
        raise DatasetError("no dataset file given")
    path = Path(path)
    rows = read_rows(path)
    if spec is None:
        spec = detect_spec(rows)
        detected = True
    _check_columns_exist(rows, spec)
    if on_start:
        on_start(len(rows) * (2 if tokenizer is not None else 1))

    issues: list[Issue] = []
    samples: list[Sample] = []
    for index, row in enumerate(rows):
        sample, row_issues = check_row(index, row, spec)
        issues += row_issues
        if sample is not None:
            samples.append(sample)
        if progress and (index + 1) % 100 == 0:
            progress(100)
    if progress and len(rows) % 100:
        progress(len(rows) % 100)
    issues += _duplicates(samples)
    if not samples:
        issues.append(Issue(-1, Severity.ERROR, "no-valid-samples",
                            "no valid rows: LLaMA-Factory would stop with "
                            "'Cannot find valid samples'"))

    report = ValidationReport(path, spec, len(rows), rows, samples, issues, detected)
    if tokenizer is not None:
        chat = template if isinstance(template, ChatTemplate) else template_for(template)
        tokens = token_report(samples, tokenizer, chat, cutoff_len, progress=progress)
        report.lengths = tokens.lengths
        report.unknown_chars = tokens.unknown_chars
        report.issues += tokens.issues
    report.issues.sort(key=lambda i: (i.index, i.severity != Severity.ERROR))
    return report


def _check_columns_exist(rows: list[Any], spec: DatasetSpec) -> None:
    """A mapped column absent from every row makes LLaMA-Factory raise KeyError before any
    row is read, so it is a dataset error, not a row error."""
    keys: set[str] = set()
    for row in rows:
        if isinstance(row, dict):
            keys.update(row)
    cols = spec.columns
    needed = [cols.messages] if spec.is_messages else [cols.prompt]
    if spec.ranking:
        needed += [cols.chosen, cols.rejected]
    elif not spec.is_messages:
        needed.append(cols.response)
    missing = [c for c in needed if c and c not in keys]
    if rows and missing and len(missing) == len([c for c in needed if c]):
        raise DatasetError(
            f"no row has column(s) {missing}: the file does not match the "
            f"{spec.formatting} mapping; check the dataset_info.json 'columns' entry"
        )


def _duplicates(samples: list[Sample]) -> list[Issue]:
    first: dict[tuple[object, ...], int] = {}
    issues = []
    for sample in samples:
        key = sample.key()
        if key in first:
            issues.append(Issue(sample.index, Severity.WARNING, "duplicate",
                                f"same sample as row {first[key]}"))
        else:
            first[key] = sample.index
    return issues


def write_clean(report: ValidationReport, out: str | Path, *, drop_duplicates: bool = True,
                drop_truncated: bool = False) -> tuple[Path, int]:
    """Write the rows without errors (and, by default, without duplicates), unchanged.

    Rows keep their original shape so the same dataset_info.json entry reads them.
    Returns the path and the number of rows written.
    """
    dropped = set(report.bad_rows())
    if drop_duplicates:
        dropped |= {i.index for i in report.issues if i.code == "duplicate"}
    if drop_truncated and report.lengths:
        dropped |= set(report.lengths.truncated)
    kept = [row for index, row in enumerate(report.rows) if index not in dropped]
    out = Path(out)
    if out.suffix.lower() not in (".json", ".jsonl"):
        out = out.with_suffix(".json")
    return write_rows(out, kept), len(kept)
