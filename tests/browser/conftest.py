"""A real gateway (the bundled SmolLM2 on llama.cpp, knowledge bases on) and headless
Chromium from Debian's package, driven by Playwright for Python."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import GatewayProcess, start_llama_servers

CHROMIUM = os.environ.get("RAGATE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ADMIN_KEY, CHAT_KEY, KB_KEY = "sk-ui-admin", "sk-ui-chat", "sk-ui-kb"


@pytest.fixture(scope="module")
def console_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    (server,) = start_llama_servers(1)
    workdir = tmp_path_factory.mktemp("console")
    # two entries for the one llama.cpp server: draining one leaves the model served
    backends = [{"url": server.url, "kind": "llamacpp", "model": "smollm2", "name": name}
                for name in ("llama-a", "llama-b")]
    config: dict[str, Any] = {
        "local_backends": [],
        "server": {"data_dir": str(workdir / "data")},
        "auth": {"keys": [
            {"key": ADMIN_KEY, "role": "admin", "owner": "ops"},
            {"key": CHAT_KEY, "role": "chat", "owner": "persona-app",
             "knowledge_bases": ["manuals"]},
            {"key": KB_KEY, "role": "kb_admin", "owner": "librarian",
             "knowledge_bases": ["manuals"]},
        ]},
        "knowledge": {"enabled": True, "ingest_workers": 1},
        "models": [{"name": "smollm2", "context_window": 2048, "backends": backends}],
    }
    gateway = GatewayProcess(config, workdir).start()
    try:
        yield gateway
    finally:
        gateway.stop()
        server.stop()


# module scope, not session: sync Playwright runs an event loop in this thread while it is
# open, and the async tests that come after it need the thread's loop to be free
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (`apt-get install chromium`; make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: ``RAGATE_SCREENSHOTS`` (the README's come from a run with
    ``RAGATE_SCREENSHOTS=tests/browser/screenshots``), else a temporary folder."""
    folder = os.environ.get("RAGATE_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
