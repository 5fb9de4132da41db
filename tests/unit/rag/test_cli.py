"""The kb command group, run through click's test runner with a fake embedder."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FakeEmbedder

import rag.cli
from rag.cli import kb


@pytest.fixture
def run(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(rag.cli, "_embedder", lambda model, hint=None: FakeEmbedder())
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(kb, [*args, "--data-dir", str(tmp_path / "data")], input=input)

    return invoke


def test_create_ingest_status_search_delete(run, tmp_path: Path):
    assert run("create", "manual").exit_code == 0
    doc = tmp_path / "说明.txt"
    doc.write_text("打印机的墨盒在右侧抽屉里。更换墨盒前请关闭电源。", encoding="gbk")
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 broken")
    result = run("ingest", "manual", str(doc), str(bad))
    assert result.exit_code == 0, result.output
    assert "1 added" in result.output and "broken.pdf" in result.output

    listing = run("list")
    assert "manual" in listing.output and "1 documents" in listing.output
    status = run("status", "manual")
    assert "说明.txt" in status.output and "fake-embedder" in status.output

    found = run("search", "manual", "墨盒在哪里")
    assert found.exit_code == 0 and "说明.txt" in found.output and "右侧抽屉" in found.output
    as_json = run("search", "manual", "墨盒", "--json", "--mode", "lexical")
    assert '"source": "说明.txt"' in as_json.output

    assert run("rebuild", "manual").exit_code == 0
    assert run("delete", "manual", "--document", "说明.txt").exit_code == 0
    assert run("delete", "manual", input="n\n").exit_code == 1
    assert run("delete", "manual", "--yes").exit_code == 0
    assert "no knowledge bases" in run("list").output


def test_errors_are_one_line_not_tracebacks(run):
    result = run("status", "missing")
    assert result.exit_code == 1 and "not found" in result.output
    assert "Traceback" not in result.output
    result = run("create", "../escape")
    assert result.exit_code == 1 and "invalid knowledge base name" in result.output


def test_migrate_moves_a_base_into_milvus_and_every_command_finds_it_there(
        run, tmp_path: Path) -> None:
    assert run("create", "manual").exit_code == 0
    doc = tmp_path / "说明.txt"
    doc.write_text("打印机的墨盒在右侧抽屉里。更换墨盒前请关闭电源。", encoding="utf-8")
    assert run("ingest", "manual", str(doc)).exit_code == 0
    uri = str(tmp_path / "data" / "knowledge_bases" / "milvus.db")
    moved = run("migrate", "manual", "--to", "milvus")
    assert moved.exit_code == 0, moved.output
    assert "1 documents" in moved.output and uri in moved.output
    assert not (tmp_path / "data" / "knowledge_bases" / "manual").exists()
    found = run("search", "manual", "墨盒在哪里")
    assert found.exit_code == 0 and "右侧抽屉" in found.output, found.output
    again = run("migrate", "manual", "--to", "milvus")
    assert again.exit_code == 1 and "already in Milvus" in again.output
