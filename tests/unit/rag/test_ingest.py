"""Ingestion jobs, upload limits and file name sanitising."""

from pathlib import Path

import pytest

from rag.errors import UploadLimitError
from rag.ingest import IngestJob, JobStatus, UploadLimits, check_upload_limits, sanitize_filename


def test_job_reports_progress_and_per_file_errors(kb, tmp_path: Path):
    good = tmp_path / "good.txt"
    good.write_text("第一句话。" * 100, encoding="gbk")
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.7\n garbage")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    job = IngestJob(kb.name, [good, bad, empty, tmp_path / "missing.md"])
    assert job.progress().status == JobStatus.QUEUED
    seen = []
    final = job.run(kb, seen.append)
    assert final.status == JobStatus.DONE and final.added == ("good.txt",)
    assert {e.source for e in final.errors} == {"bad.pdf", "empty.txt", "missing.md"}
    assert all(e.reason for e in final.errors)
    assert seen[0].status == JobStatus.RUNNING
    done = [p.files_done for p in seen]
    assert done == sorted(done) and set(done) == {0, 1, 2, 3, 4}
    stages = {(f.source, f.stage) for p in seen for f in p.files}
    assert ("good.txt", "parsing") in stages and ("good.txt", "indexed") in stages
    assert [(f.source, f.stage, bool(f.reason)) for f in final.files] == [
        ("good.txt", "indexed", False), ("bad.pdf", "failed", True),
        ("empty.txt", "failed", True), ("missing.md", "failed", True)]
    assert max(p.chunks_embedded for p in seen) == final.chunks_total > 0
    assert final.pages_done == 1 and final.finished_at is not None
    assert final.to_dict()["status"] == "done"
    with pytest.raises(RuntimeError, match="already ran"):
        job.run(kb)


def test_job_with_only_bad_files_fails_without_writing(kb, tmp_path: Path):
    bad = tmp_path / "bad.docx"
    bad.write_bytes(b"nope")
    version = kb.version
    final = IngestJob(kb.name, [bad]).run(kb)
    assert final.status == JobStatus.FAILED and final.message == "no file could be read"
    assert kb.version == version


def test_job_uses_given_source_names_sanitised(kb, tmp_path: Path):
    path = tmp_path / "upload-1234.tmp"
    path.write_text("内容。" * 10, encoding="utf-8")
    final = IngestJob(kb.name, [(path, "../../etc/报告.txt")]).run(kb)
    assert final.added == ("报告.txt",)


def test_upload_limits():
    limits = UploadLimits(max_file_bytes=100, max_files=2, max_total_bytes=150)
    check_upload_limits([("a", 100), ("b", 50)], limits)
    with pytest.raises(UploadLimitError, match="too many files: 3") as info:
        check_upload_limits([("a", 1), ("b", 1), ("c", 1)], limits)
    assert (info.value.limit, info.value.actual) == (2, 3)
    with pytest.raises(UploadLimitError, match="'big.pdf' is 101 bytes"):
        check_upload_limits([("big.pdf", 101)], limits)
    with pytest.raises(UploadLimitError, match="in total"):
        check_upload_limits([("a", 100), ("b", 100)], limits)
    with pytest.raises(ValueError):
        UploadLimits(max_files=0)


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system.ini", "system.ini"),
        ("/abs/path/年度报告.docx", "年度报告.docx"),
        ("..", "upload"),
        ("", "upload"),
        (".bashrc", "bashrc"),
        ("a<b>c:d|e?.txt", "a_b_c_d_e_.txt"),
        ("nul\x00l.txt", "null.txt"),
        ("CON.txt", "_CON.txt"),
        ("line\nbreak.md", "line_break.md"),
    ],
)
def test_sanitize_filename(raw: str, safe: str):
    assert sanitize_filename(raw) == safe


def test_sanitize_filename_limits_bytes_and_keeps_extension():
    name = sanitize_filename("长" * 200 + ".pdf", max_bytes=100)
    assert name.endswith(".pdf") and len(name.encode()) <= 100
