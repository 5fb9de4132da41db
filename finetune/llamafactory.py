"""Register datasets in LLaMA-Factory's dataset_info.json and re-validate through the entry."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from finetune.datasets import ValidationReport, validate_dataset
from finetune.errors import DatasetError
from finetune.files import read_rows, write_json
from finetune.spec import DatasetSpec, detect_spec


def load_dataset_info(path: str | Path) -> dict[str, Any]:
    """The entries of a dataset_info.json; an absent file is an empty registry."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(info, dict):
        raise DatasetError(f"{path} must hold a JSON object of dataset entries")
    return info


def register_dataset(
    dataset_info: str | Path,
    name: str,
    data_file: str | Path,
    *,
    spec: DatasetSpec | None = None,
    overwrite: bool = True,
) -> tuple[dict[str, Any], ValidationReport]:
    """Add or update entry ``name`` for ``data_file``, then validate the data through it.

    ``file_name`` is relative to the dataset_info.json folder (LLaMA-Factory's
    ``dataset_dir``) when the file lives under it, absolute otherwise; LLaMA-Factory joins
    it onto ``dataset_dir`` and an absolute path survives the join. Without ``spec`` the
    format is detected from the file. The registry is written atomically, keeping the
    other entries and their order.
    """
    info_path = Path(dataset_info)
    data_path = Path(data_file).resolve()
    if not data_path.is_file():
        raise DatasetError(f"dataset file not found: {data_path}")
    if not name or not name.strip():
        raise DatasetError("a dataset name is required")
    info = load_dataset_info(info_path)
    if name in info and not overwrite:
        raise DatasetError(f"dataset {name!r} already exists in {info_path}")
    if spec is None:
        spec = detect_spec(read_rows(data_path))
    dataset_dir = info_path.resolve().parent
    try:
        file_name = str(data_path.relative_to(dataset_dir))
    except ValueError:
        file_name = str(data_path)
    entry = spec.with_file(file_name).to_entry()
    info[name] = entry
    write_json(info_path, info)
    report = validate_dataset(dataset_info=info_path, name=name)
    return entry, report


def dataset_dir_of(dataset_info: str | Path) -> str:
    """The ``dataset_dir`` value a training YAML needs for this registry."""
    return os.fspath(Path(dataset_info).resolve().parent)
