"""Read and write dataset files in the layouts LLaMA-Factory loads (json, jsonl, csv, txt)."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from finetune.errors import DatasetError

SUFFIXES = (".json", ".jsonl", ".csv", ".txt")


def read_rows(path: str | Path) -> list[Any]:
    """All rows of a data file, as parsed; rows are not checked here (rules.py does that).

    A ``.json`` file may hold a list of rows or JSON lines (LLaMA-Factory's loader accepts
    both); ``.txt`` gives one ``{"text": line}`` row per non-empty line, like the
    ``datasets`` text builder.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        stripped = text.lstrip()
        if stripped.startswith("["):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}: invalid JSON: {exc}") from exc
            if not isinstance(data, list):
                raise DatasetError(f"{path}: expected a JSON list of rows")
            return data
        return _json_lines(path, text)
    if suffix == ".jsonl":
        return _json_lines(path, text)
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    if suffix == ".txt":
        return [{"text": line} for line in text.splitlines() if line.strip()]
    raise DatasetError(f"{path}: unsupported file type {suffix!r}; use one of {SUFFIXES}")


def _json_lines(path: Path, text: str) -> list[Any]:
    rows: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: invalid JSON line: {exc}") from exc
    return rows


def write_rows(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write rows as a JSON list (``.json``) or JSON lines (``.jsonl``), atomically.

    Atomic so that a crash never leaves a half-written file that LLaMA-Factory would
    half-read.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".jsonl"):
        raise DatasetError(f"{path}: write .json or .jsonl, not {suffix!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if suffix == ".json":
                json.dump(list(rows), handle, ensure_ascii=False, indent=2)
                handle.write("\n")
            else:
                for row in rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write one JSON document atomically (dataset_info.json, DeepSpeed configs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False, indent=2)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
