"""rag is a library: it must not pull in the gateway or a web framework."""

import subprocess
import sys


def test_rag_imports_nothing_of_ours_nor_a_web_framework():
    code = (
        "import sys, rag, rag.cli, rag.ingest, rag.knowledge_base, rag.retrieval; "
        "bad = [m for m in ('gateway', 'finetune', 'serving', 'fastapi', 'starlette') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_names_are_exported():
    import rag

    for name in rag.__all__:
        assert hasattr(rag, name), name
