"""Two gateway processes sharing a Redis of the test's own: an admin's backend change on
one reaches the other and survives a restart; /ready follows the stores; a local
llama.cpp backend that is killed comes back without a gateway restart."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import GatewayProcess, RedisServer

pytestmark = pytest.mark.integration

CHAT = {"model": "fake", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
POLL_S = 0.5  # pool.registry_poll_s: the documented bound for a change to reach a replica


def replica_config(backend: str, redis_url: str) -> dict[str, Any]:
    # one server under two names: which one answered is in x-ragate-backend
    return {
        "local_backends": [], "knowledge": {"enabled": False},
        "conversations": {"store": "redis", "redis_url": redis_url, "key_prefix": "rp"},
        "pool": {"registry_poll_s": POLL_S, "health_interval_s": 1},
        "models": [{"name": "fake", "backends": [
            {"url": backend, "kind": "vllm", "model": "fake-upstream", "name": "one"},
            {"url": backend, "kind": "vllm", "model": "fake-upstream", "name": "two"}]}],
    }


def answering(client: httpx.Client, n: int = 6) -> set[str]:
    names = set()
    for _ in range(n):
        r = client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200, r.text
        names.add(r.headers["x-ragate-backend"])
    return names


def within(seconds: float, check: Callable[[], bool]) -> float:
    """How long ``check`` took to turn true (fails past ``seconds``)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, "not within the bound"
        time.sleep(0.05)
    return time.monotonic() - started


@pytest.fixture
def replicas(fake_backend: str, own_redis: RedisServer, tmp_path: Path
             ) -> Iterator[list[GatewayProcess]]:
    started = []
    try:
        for index in range(2):
            workdir = tmp_path / f"replica-{index}"
            workdir.mkdir()
            gateway = GatewayProcess(replica_config(fake_backend, own_redis.url), workdir)
            started.append(gateway.start())
        yield started
    finally:
        for gateway in started:
            gateway.stop()


def test_a_drain_on_one_replica_is_honoured_by_the_other(
        replicas: list[GatewayProcess]) -> None:
    first, second = (httpx.Client(base_url=g.url, timeout=30) for g in replicas)
    with first, second:
        assert answering(second) == {"one", "two"}
        assert first.post("/admin/backends/one/drain").status_code == 200
        took = within(POLL_S * 2 + 1, lambda: answering(second, 4) == {"two"})
        assert took <= POLL_S * 2 + 1
        second.post("/admin/backends/one/undrain")
        within(POLL_S * 2 + 1, lambda: answering(first, 4) == {"one", "two"})


def test_an_added_and_a_removed_backend_survive_a_restart(
        replicas: list[GatewayProcess], fake_backend: str) -> None:
    first, second = replicas
    with httpx.Client(base_url=first.url, timeout=30) as client:
        r = client.post("/admin/backends", json={"model": "fake", "backend": {
            "url": fake_backend, "kind": "vllm", "model": "fake-upstream", "name": "three"}})
        assert r.status_code == 201, r.text
        assert client.delete("/admin/backends/one").status_code == 200
    second.stop()
    second.start()
    with httpx.Client(base_url=second.url, timeout=30) as client:
        names = {b["name"] for b in client.get("/admin/backends").json()["data"]}
        assert names == {"two", "three"}
        assert answering(client) == {"two", "three"}


def test_ready_turns_503_while_redis_is_down(replicas: list[GatewayProcess],
                                             own_redis: RedisServer) -> None:
    gateway = replicas[0]
    assert httpx.get(gateway.url + "/ready").status_code == 200
    own_redis.stop()
    r = httpx.get(gateway.url + "/ready", timeout=10)
    assert r.status_code == 503 and r.json()["stores"]["conversations"] != "ok"
    own_redis.start()
    within(10, lambda: httpx.get(gateway.url + "/ready").status_code == 200)


def test_a_killed_local_backend_is_restarted(tmp_path: Path) -> None:
    gateway = GatewayProcess({
        "local_backends": [{"model": "smollm2", "n_threads": 1}],
        "knowledge": {"enabled": False}, "pool": {"health_interval_s": 1},
        "server": {"data_dir": str(tmp_path / "data")}}, tmp_path)
    gateway.start(timeout_s=180)
    chat = {"model": "smollm2", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            def supervisor() -> dict[str, Any]:
                rows = client.get("/admin/backends").json()["data"]
                return next(r for r in rows if r["name"] == "local-smollm2")["supervisor"]

            assert client.post("/v1/chat/completions", json=chat).status_code == 200
            pid = supervisor()["pid"]
            os.kill(pid, signal.SIGKILL)
            within(60, lambda: supervisor()["restarts"] == 1
                   and supervisor()["state"] == "running")
            state = supervisor()
            assert state["pid"] != pid and state["last_exit"] == -signal.SIGKILL
            # the health probe sees it back; the same port, so the same backend entry
            within(30, lambda: client.post("/v1/chat/completions", json=chat).status_code == 200)
    finally:
        gateway.stop()
