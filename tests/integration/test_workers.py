"""``ragate serve --workers 2``: two gateway processes on one port, in front of the fast
fake backend, agreeing through a Redis of the test's own: both answer, a rate limit holds
in total, and /metrics counts the requests of both."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from serving import free_port
from tests.integration.conftest import GatewayProcess, RedisServer

pytestmark = pytest.mark.integration

CHAT = {"model": "fake", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def shared_config(backend: str, redis_url: str) -> dict[str, Any]:
    return {
        "local_backends": [], "knowledge": {"enabled": False},
        "conversations": {"store": "redis", "redis_url": redis_url, "key_prefix": "wk"},
        "auth": {"keys": [
            {"key": "sk-ops", "role": "admin", "owner": "ops"},
            {"key": "sk-ten", "owner": "ten", "limits": {"requests_per_minute": 10}}],
            "store": "redis", "redis_url": redis_url, "key_prefix": "wk"},
        "models": [{"name": "fake", "backends": [
            {"url": backend, "kind": "vllm", "model": "fake-upstream"}]}],
    }


def workers_of(pid: int) -> list[int]:
    """The supervisor's worker processes (multiprocessing's spawned children)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"multiprocessing.spawn" in cmdline and b"resource_tracker" not in cmdline:
                found.append(int(child))
    return found


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def burst(url: str, key: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60,
                                 limits=httpx.Limits(max_connections=count)) as client:
        return await asyncio.gather(*(
            client.post("/v1/chat/completions", json=CHAT,
                        headers={"Authorization": f"Bearer {key}"})
            for _ in range(count)))


def test_two_workers_share_the_port_a_limit_and_the_metrics(
        fake_backend: str, tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path).start()
    gateway = GatewayProcess(shared_config(fake_backend, redis_server.url), tmp_path,
                             args=["--workers", "2"])
    try:
        gateway.start()
        assert gateway.process is not None
        deadline = time.monotonic() + 60
        while len(workers := workers_of(gateway.process.pid)) < 2:
            assert time.monotonic() < deadline, gateway.log()
            time.sleep(0.2)
        assert len(workers) == 2
        before = {pid: cpu_ticks(pid) for pid in workers}

        served = asyncio.run(burst(gateway.url, "sk-ops", 300))
        assert {r.status_code for r in served} == {200}
        assert all(cpu_ticks(pid) > before[pid] for pid in workers), "both workers served"

        limited = asyncio.run(burst(gateway.url, "sk-ten", 30))
        statuses = [r.status_code for r in limited]
        assert statuses.count(200) == 10 and statuses.count(429) == 20, statuses

        text = gateway.metrics()
        total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                    if line.startswith("ragate_requests_total{")
                    and 'route="/v1/chat/completions"' in line)
        assert total == 330, "the requests of both workers, counted once each"
        assert "ragate_backend_in_flight{" in text
    finally:
        gateway.stop()
        redis_server.stop()
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers), "workers stopped too"


def test_state_kept_in_process_is_refused_for_more_than_one_worker(tmp_path: Path) -> None:
    config = tmp_path / "ragate.yaml"
    config.write_text(yaml.safe_dump({
        "local_backends": [], "knowledge": {"enabled": False},
        "server": {"data_dir": str(tmp_path)},
        "models": [{"name": "fake", "backends": [{"url": "http://127.0.0.1:9", "kind": "vllm"}]}],
    }))
    done = subprocess.run([sys.executable, "-m", "gateway", "serve", "-c", str(config),
                           "--workers", "2", "--port", str(free_port())],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "conversations.store is sqlite" in done.stderr


def llama_servers_under(pid: int) -> list[int]:
    """Every llama.cpp server process in ``pid``'s process tree."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        try:
            cmdline = Path(f"/proc/{current}/cmdline").read_bytes()
            children = [int(c) for task in os.listdir(f"/proc/{current}/task")
                        for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
        except OSError:
            continue
        if b"llama_cpp.server" in cmdline:  # run in-process by serving.orphan_guard
            found.append(current)
        pending.extend(children)
    return found


def test_the_local_llama_cpp_backend_is_started_once_for_every_worker(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path).start()
    config = {
        "local_backends": [{"model": "smollm2", "n_threads": 1, "n_ctx": 1024}],
        "knowledge": {"enabled": False},
        "conversations": {"store": "redis", "redis_url": redis_server.url, "key_prefix": "wl"},
    }
    gateway = GatewayProcess(config, tmp_path, args=["--workers", "2"])
    try:
        gateway.start()
        assert gateway.process is not None
        assert len(llama_servers_under(gateway.process.pid)) == 1, gateway.log()
        body = {"model": "smollm2", "max_tokens": 4,
                "messages": [{"role": "user", "content": "Say hi"}]}
        answers = asyncio.run(burst_body(gateway.url, body, 6))
        assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
        assert len(llama_servers_under(gateway.process.pid)) == 1
    finally:
        gateway.stop()
        redis_server.stop()


async def burst_body(url: str, body: dict[str, Any], count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        return await asyncio.gather(*(client.post("/v1/chat/completions", json=body)
                                      for _ in range(count)))
