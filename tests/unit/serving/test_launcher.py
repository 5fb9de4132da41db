"""The llama.cpp launcher: a real server, started, probed, stopped, never orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from serving import LlamaCppServer, ServingError

pytestmark = pytest.mark.integration


def test_start_answer_stop() -> None:
    with LlamaCppServer("bundled:smollm2", n_threads=1) as server:
        r = httpx.get(server.url + "/v1/models")
        assert r.status_code == 200
        pid = server.pid
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_missing_gguf_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ServingError, match="GGUF file not found"):
        LlamaCppServer(tmp_path / "absent.gguf")


def test_server_dies_with_a_killed_parent(tmp_path) -> None:
    script = textwrap.dedent("""
        import sys, time
        from serving import LlamaCppServer
        server = LlamaCppServer("bundled:smollm2", n_threads=1).start()
        print(server.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the model server outlived its parent")
    finally:
        parent.stdout.close()
        if parent.poll() is None:
            parent.kill()


def test_a_server_started_from_a_worker_thread_survives_the_thread() -> None:
    from concurrent.futures import ThreadPoolExecutor

    server = LlamaCppServer("bundled:smollm2", n_threads=1)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(server.start).result()
    try:
        time.sleep(2.5)  # longer than the guard's check interval
        assert httpx.get(server.url + "/v1/models").status_code == 200
    finally:
        server.stop()
