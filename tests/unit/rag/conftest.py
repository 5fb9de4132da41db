"""Shared fixtures for rag tests: a fast deterministic embedder, a store, generated files."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rag.knowledge_base import KnowledgeBaseStore
from rag.snapshot import ChunkingConfig


class FakeEmbedder:
    """Bag-of-character-trigrams hashed into 64 dims: similar texts get similar vectors,
    with no model to load. ``calls`` counts embed() calls for tests that need it."""

    def __init__(self, name: str = "fake-embedder", dimension: int = 64) -> None:
        self.name = name
        self.dimension = dimension
        self.calls = 0

    def embed(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            text = text.lower()
            for i in range(max(1, len(text) - 2)):
                gram = text[i : i + 3].encode()
                bucket = int.from_bytes(hashlib.md5(gram).digest()[:4], "little")
                out[row, bucket % self.dimension] += 1
            norm = np.linalg.norm(out[row])
            out[row] = out[row] / norm if norm else 1.0 / np.sqrt(self.dimension)
        return out


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def store(tmp_path: Path) -> KnowledgeBaseStore:
    return KnowledgeBaseStore(tmp_path / "kbs")


@pytest.fixture
def kb(store: KnowledgeBaseStore, embedder: FakeEmbedder):
    return store.create("docs", embedder, chunking=ChunkingConfig(120, 20))


BUNDLED_CJK_FONT = Path(__file__).resolve().parents[2] / "data" / "fonts" / "NotoSansSC-subset.otf"


def find_cjk_font(bundled: bool = True) -> Path | None:
    """A font file with Chinese glyphs: the subset under tests/data (every character the
    tests render; ``bundled=False`` skips it, for any other text), else fontconfig, else
    usual Debian paths."""
    if bundled and BUNDLED_CJK_FONT.is_file():
        return BUNDLED_CJK_FONT
    candidates: list[Path] = []
    if shutil.which("fc-list"):
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True,
                             check=False).stdout
        candidates += [Path(line.split(":")[0].strip()) for line in out.splitlines() if line]
    candidates += [Path(p) for p in (
        "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
        "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
        "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    )]
    existing = [p for p in candidates if p.is_file()]
    # Prefer families that also cover Latin (Droid Sans Fallback has CJK glyphs only);
    # fpdf2 reads a collection (.ttc) through its first face.
    existing.sort(key=lambda p: not any(k in p.name.lower() for k in ("wqy", "noto")))
    return existing[0] if existing else None


@pytest.fixture(scope="session")
def cjk_font() -> Path:
    font = find_cjk_font()
    if font is None:
        pytest.skip("no CJK font on this machine (apt-get install fonts-wqy-zenhei)")
    return font
