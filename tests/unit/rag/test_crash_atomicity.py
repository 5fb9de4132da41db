"""A writer killed at any point of an ingest leaves a knowledge base that loads, with either
the old content or the new, never a mix; the next write cleans up after it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rag.ingest import ingest_files
from rag.knowledge_base import KnowledgeBaseStore

HERE = Path(__file__).parent

# The worker: opens the base, arms one crash point, ingests. Crash points end the process
# with os._exit (no cleanup, like a kill); "embedding" waits to be SIGKILLed by the test.
WORKER = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {here!r})
    from conftest import FakeEmbedder
    import rag.knowledge_base as kbmod
    import rag.snapshot as snapmod
    from rag.ingest import ingest_files
    from rag.knowledge_base import KnowledgeBaseStore

    root, point, marker, *files = sys.argv[1:]
    embedder = FakeEmbedder()

    def die(*_a, **_k):
        os._exit(9)

    if point == "embedding":
        real = embedder.embed
        def slow(texts):
            open(marker, "w").close()
            time.sleep(60)
            return real(texts)
        embedder.embed = slow
    elif point == "dense_write":
        def half_write(self, path):
            open(path, "wb").write(b"partial faiss file")
            die()
        snapmod.DenseIndex.save = half_write
    elif point == "lexical_write":
        snapmod.LexicalIndex.save = die
    elif point == "before_publish":
        kbmod._write_current = die
    elif point == "after_publish":
        kbmod._collect_garbage = die
    kb = KnowledgeBaseStore(root).open("kb", embedder)
    ingest_files(kb, files)
    print("finished without crashing")
""")


@pytest.fixture
def base(store: KnowledgeBaseStore, embedder, tmp_path: Path):
    kb = store.create("kb", embedder)
    first = tmp_path / "first.txt"
    first.write_text("第一个文件讲的是北京的故宫。", encoding="utf-8")
    ingest_files(kb, [first])
    new = []
    for i in range(3):
        path = tmp_path / f"new{i}.txt"
        path.write_text(f"新文件{i}讲的是上海的外滩和东方明珠。" * 20, encoding="utf-8")
        new.append(path)
    return kb, new


@pytest.mark.parametrize(
    ("point", "published"),
    [
        ("embedding", False),
        ("dense_write", False),
        ("lexical_write", False),
        ("before_publish", False),
        ("after_publish", True),
    ],
)
def test_killed_writer_leaves_a_loadable_base(base, store, embedder, tmp_path: Path,
                                              point: str, published: bool):
    kb, new_files = base
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(here=str(HERE)))
    marker = tmp_path / "embedding-started"
    args = [sys.executable, str(script), str(store.root), point, str(marker),
            *map(str, new_files)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if point == "embedding":
            deadline = time.monotonic() + 60
            while not marker.exists():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "worker never started embedding"
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, out + err

    reopened = store.open("kb", embedder)  # must load
    sources = sorted(d.source for d in reopened.documents())
    expected = ["first.txt"] + (sorted(p.name for p in new_files) if published else [])
    assert sources == expected
    assert reopened.manifest.documents == len(expected)
    assert reopened.search("故宫", mode="lexical")[0].source == "first.txt"

    # The next write succeeds and removes what the crash left behind.
    extra = tmp_path / "extra.txt"
    extra.write_text("额外的文件讲的是广州。", encoding="utf-8")
    assert ingest_files(reopened, [extra]).status == "done"
    leftovers = [p.name for p in (reopened.path / "snapshots").iterdir()
                 if p.name.startswith(".tmp-")]
    assert leftovers == []
    assert len(list((reopened.path / "snapshots").iterdir())) <= 2
