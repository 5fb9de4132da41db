"""Real services for integration tests: llama.cpp servers and the gateway as a process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from serving import LlamaCppServer, ServingError, free_port, wait_until_healthy


def start_llama_servers(count: int, n_ctx: int = 2048) -> list[LlamaCppServer]:
    """Start ``count`` SmolLM2 servers in parallel (one thread each: the machine has 2 cores)."""
    try:
        servers = [LlamaCppServer("bundled:smollm2", n_ctx=n_ctx, n_threads=1,
                                  model_alias="smollm2-upstream") for _ in range(count)]
    except ServingError as exc:
        pytest.fail(f"bundled model missing: {exc}")
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda s: s.start(timeout_s=120), servers))
    return servers


@pytest.fixture(scope="module")
def fake_backend() -> Iterator[str]:
    """bench/fake_backend.py: a fast OpenAI backend with canned answers."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.fake_backend", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, path="/health", timeout_s=30)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
def llama_pair() -> Iterator[list[LlamaCppServer]]:
    servers = start_llama_servers(2)
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def stop_process(process: subprocess.Popen[bytes] | None, sig: int, timeout_s: float) -> None:
    """Ask a process we started to stop with ``sig``; SIGKILL it after ``timeout_s``."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class GatewayProcess:
    """``python -m gateway serve`` with a YAML config, on a free port; restartable."""

    def __init__(self, config: dict[str, Any], workdir: Path, args: list[str] | None = None
                 ) -> None:
        self.args = args or []  # more ``serve`` options (--workers N)
        self.port = free_port()
        self.config_path = workdir / "ragate.yaml"
        config.setdefault("server", {}).update(port=self.port, host="127.0.0.1")
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / f"gateway-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120) -> GatewayProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "-c", str(self.config_path), *self.args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        try:
            wait_until_healthy(self.url, path="/health", timeout_s=timeout_s,
                               still_running=lambda: self.process.poll() is None)
        except ServingError as exc:
            self.stop()
            raise AssertionError(f"{exc}\n{self.log()}") from exc
        return self

    def stop(self) -> None:
        stop_process(self.process, signal.SIGINT, timeout_s=20)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics").text


@pytest.fixture
def gateway_factory() -> Iterator[Any]:
    started: list[GatewayProcess] = []
    workdir = Path(tempfile.mkdtemp(prefix="ragate-it-"))

    def make(config: dict[str, Any]) -> GatewayProcess:
        sub = workdir / str(len(started))
        sub.mkdir()
        gateway = GatewayProcess(config, sub)
        started.append(gateway)
        return gateway.start()

    try:
        yield make
    finally:
        for gateway in started:
            gateway.stop()


class WorkerProcess:
    """``python -m gateway worker`` on a config; alive once its heartbeat file appears."""

    def __init__(self, config_path: Path, workdir: Path, *,
                 stop_grace_s: float | None = None) -> None:
        self.config_path = config_path
        self.env = ({"RAGATE_KNOWLEDGE__JOB_STOP_GRACE_S": str(stop_grace_s)}
                    if stop_grace_s is not None else {})
        self.alive_file = workdir / f"worker-{time.monotonic_ns()}.alive"
        self.log_path = workdir / f"{self.alive_file.stem}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "worker", "-c", str(self.config_path),
             "--alive-file", str(self.alive_file)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self.alive_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"worker did not start:\n{self.log()}")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL: the worker gets no chance to report anything."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM, timeout_s=30)
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class MilvusLiteServer:
    """``milvus-lite server`` on a folder of the test's own: one gRPC server that several
    gateway processes share (embedded, a milvus-lite folder takes one process)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port("127.0.0.1")
        self.data_dir = workdir / "milvus.db"
        self.log_path = workdir / "milvus-lite.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MilvusLiteServer:
        binary = Path(sys.executable).parent / "milvus-lite"
        if not binary.exists():
            pytest.skip("milvus-lite is not installed (the milvus extra)")
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        self.process = subprocess.Popen(
            [str(binary), "server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
             "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        log.close()
        import socket

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"milvus-lite server did not start: {self.log_path.read_text()}")

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM, timeout_s=20)
        self.process = None


class RedisServer:
    """A redis-server of our own on a free port (the shared one is never touched)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port("127.0.0.1")
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, which it may stop and start."""
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()
