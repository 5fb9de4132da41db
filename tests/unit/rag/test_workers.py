"""Ingestion in worker processes: same results as in-thread, bounded memory, files that
fail alone, duplicate names, and the real embedder in the worker."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rag.ingest import DUPLICATE_NAME, FileStage, IngestJob, JobStatus
from rag.workers import FileTask, IngestPool, MiB, WorkerLimits


@pytest.fixture(scope="module")
def pool():
    pool = IngestPool(2, WorkerLimits(memory_bytes=2048 * MiB))
    yield pool
    pool.close()


def write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def docx_bomb(size: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as stream:
            for _ in range(size >> 20):
                stream.write(b"\0" * MiB)
    return out.getvalue()


def test_pool_gives_what_the_thread_gives(kb, store, embedder, tmp_path: Path, pool):
    files = [write(tmp_path, "a.txt", "第一句话。" * 200), write(tmp_path, "b.md", "# Title\n\n"
             + "Forklift keys are kept in locker 38. " * 40), write(tmp_path, "bad.pdf", "%PDF-1")]
    in_thread = IngestJob(kb.name, files).run(kb)
    other = store.create("other", embedder, chunking=kb.manifest.chunking)
    seen = []
    in_pool = IngestJob(other.name, files).run(other, seen.append, pool)
    assert in_pool.status == in_thread.status == JobStatus.DONE
    assert in_pool.added == in_thread.added == ("a.txt", "b.md")
    assert in_pool.errors == in_thread.errors and len(in_pool.errors) == 1
    assert in_pool.chunks_total == in_thread.chunks_total > 0
    assert [f.stage for f in in_pool.files] == ["indexed", "indexed", "failed"]
    assert ("a.txt", "parsing") in {(f.source, f.stage) for p in seen for f in p.files}
    assert kb.search("locker 38", mode="lexical")[0].text == \
        other.search("locker 38", mode="lexical")[0].text


@pytest.mark.parametrize("in_pool", [False, True])
def test_duplicate_names_fail_the_second_only(kb, tmp_path: Path, pool, in_pool):
    first = write(tmp_path, "one.txt", "第一份文件的内容。" * 20)
    second = write(tmp_path, "two.txt", "第二份文件的内容。" * 20)
    job = IngestJob(kb.name, [(first, "报告.txt"), (second, "sub/报告.txt")])
    final = job.run(kb, pool=pool if in_pool else None)
    assert final.status == JobStatus.DONE and final.added == ("报告.txt",)
    assert [(e.source, e.reason) for e in final.errors] == [("报告.txt", DUPLICATE_NAME)]
    assert [f.stage for f in final.files] == [FileStage.INDEXED, FileStage.FAILED]
    assert "第一份" in kb.search("第一份文件", mode="lexical")[0].text


def test_zip_bomb_is_refused_with_the_workers_memory_bounded(kb, tmp_path: Path):
    fresh = IngestPool(1, WorkerLimits(memory_bytes=1024 * MiB))
    try:
        bomb = write(tmp_path, "bomb.docx", docx_bomb(2048 * MiB))
        good = write(tmp_path, "good.txt", "A file that is fine. " * 20)
        tasks = [FileTask("job", i, str(p), p.name, kb.manifest.chunking)
                 for i, p in enumerate([bomb, good])]
        outcomes = list(fresh.run(tasks))
        by_name = {o.source: o for o in outcomes}
        assert "zip bomb" in by_name["bomb.docx"].error
        assert by_name["good.txt"].error is None
        assert max(o.peak_rss for o in outcomes) < 400 * MiB  # it never inflated 2 GiB
    finally:
        fresh.close()


def test_a_file_over_the_memory_bound_fails_alone(kb, tmp_path: Path):
    tight = IngestPool(1, WorkerLimits(memory_bytes=384 * MiB))
    try:
        huge = write(tmp_path, "huge.txt", ("数据" * 50 + "\n") * 400_000)  # 40 MB of text
        small = write(tmp_path, "small.txt", "A small file. " * 20)
        final = IngestJob(kb.name, [huge, small]).run(kb, pool=tight)
        assert final.status == JobStatus.DONE and final.added == ("small.txt",)
        [error] = final.errors
        assert error.source == "huge.txt"
        assert error.reason == ("needs more memory than an ingestion worker may use for one "
                                "file (384 MiB, knowledge.worker_memory_mb)")
    finally:
        tight.close()


def test_the_real_embedder_runs_in_the_worker(store, tmp_path: Path, pool):
    from rag.embeddings import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    kb = store.create("real", embedder)
    path = write(tmp_path, "keys.txt", "The forklift keys are kept in locker 38. " * 30)
    [outcome] = pool.run([FileTask("job", 0, str(path), "keys.txt", kb.manifest.chunking,
                                   embedder.spec)])
    vectors = outcome.prepared.vectors  # embedded in the worker, with the base's model
    assert vectors is not None and vectors.shape == (len(outcome.prepared.chunks), 384)
    assert np.allclose(vectors, embedder.embed([c.text for c in outcome.prepared.chunks]),
                       atol=1e-4)
    final = IngestJob(kb.name, [path]).run(kb, pool=pool)
    assert final.status == JobStatus.DONE and final.chunks_total > 0
    [hit] = kb.search("where are the forklift keys?", mode="dense", top_k=1)
    assert hit.source == "keys.txt" and hit.dense_score > 0.5
    again = embedder.embed([hit.text.split("\n")[0][:200]])
    assert np.isfinite(again).all()


def test_ocr_runs_in_the_worker_with_progress(kb, tmp_path: Path, pool):
    pytest.importorskip("rapidocr_onnxruntime")
    from tests.unit.rag.ocr_pages import ENGLISH, page_image, scanned_pdf

    scan = write(tmp_path, "scan.pdf", scanned_pdf(page_image(ENGLISH)))
    seen = []
    final = IngestJob(kb.name, [scan]).run(kb, seen.append, pool)
    assert final.status == JobStatus.DONE and final.pages_done == 1
    assert ("scan.pdf", "ocr", 1) in {(f.source, f.stage, f.pages) for p in seen for f in p.files}
    assert kb.search("locker 38", mode="lexical", top_k=1)[0].page == 1


def test_the_memory_bound_is_for_files_not_for_the_model(store, tmp_path: Path):
    """A budget smaller than torch and the model together still loads them (an admin's
    bge-m3 is 2.2 GB): the bound is set above what the worker holds once they are in,
    and a file that needs more than the budget still fails alone."""
    from rag.embeddings import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    kb = store.create("bounded", embedder)
    tight = IngestPool(1, WorkerLimits(memory_bytes=256 * MiB))
    try:
        small = write(tmp_path, "small.txt", "The forklift keys are kept in locker 38. " * 20)
        huge = write(tmp_path, "huge.txt", ("数据" * 50 + "\n") * 800_000)  # 80 MB of text
        final = IngestJob(kb.name, [small, huge]).run(kb, pool=tight)
        assert final.added == ("small.txt",), final.errors
        [error] = final.errors
        assert error.source == "huge.txt" and "more memory" in error.reason
        [hit] = kb.search("where are the forklift keys?", mode="dense", top_k=1)
        assert hit.source == "small.txt"
    finally:
        tight.close()


def test_a_file_over_the_time_limit_fails_alone_and_the_worker_goes_on(kb, tmp_path: Path):
    slow = IngestPool(1, WorkerLimits(file_seconds=1.0))
    try:
        long = write(tmp_path, "long.txt", ("数据处理" * 50 + "\n") * 100_000)  # seconds of jieba
        small = write(tmp_path, "small.txt", "A small file. " * 20)
        started = time.monotonic()
        final = IngestJob(kb.name, [long, small]).run(kb, pool=slow)
        assert time.monotonic() - started < 30
        assert final.status == JobStatus.DONE and final.added == ("small.txt",)
        [error] = final.errors
        assert error.source == "long.txt"
        assert error.reason.startswith("took longer than the 1 s a file may take")
        again = IngestJob(kb.name, [write(tmp_path, "after.txt", "Still working. " * 20)])
        assert again.run(kb, pool=slow).added == ("after.txt",), "the alarm was cleared"
    finally:
        slow.close()
