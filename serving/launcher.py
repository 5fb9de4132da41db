"""Start a local llama.cpp backend (llama-cpp-python's server) and stop it cleanly."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

from serving.bundled import resolve_gguf
from serving.errors import ServingError
from serving.health import wait_until_healthy


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LlamaCppServer:
    """``python -m llama_cpp.server`` for one GGUF file, on a free port by default.

    Lifecycle: ``start()`` spawns the process and blocks until ``/v1/models`` answers;
    ``stop()`` sends SIGTERM, then SIGKILL after ``grace_s``. Usable as a context manager.
    The process gets its own session so a Ctrl-C in the parent reaches it only through us.
    """

    def __init__(
        self,
        gguf: str | Path = "bundled:smollm2",
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        model_alias: str | None = None,
        extra_args: list[str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.gguf = resolve_gguf(str(gguf))
        self.host = host
        self.port = port or free_port(host)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.model_alias = model_alias
        self.extra_args = extra_args or []
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        cmd = [
            # the guard ends the server if this process dies, even by SIGKILL
            sys.executable, "-m", "serving.orphan_guard", str(os.getpid()), "llama_cpp.server",
            "--model", str(self.gguf),
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            # by default a request waiting for the model (even GET /v1/models, which a
            # health probe sends) cuts the running stream short with [DONE]; the gateway
            # queues and balances itself, so never interrupt
            "--interrupt_requests", "false",
        ]
        if self.n_threads:
            cmd += ["--n_threads", str(self.n_threads)]
        if self.model_alias:
            cmd += ["--model_alias", self.model_alias]
        return cmd + self.extra_args

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit status of the last process, once it has ended."""
        return self._process.poll() if self._process is not None else None

    def start(self, timeout_s: float = 120.0) -> LlamaCppServer:
        if self.running():
            return self
        # find_spec, not import: importing llama_cpp loads the native library for nothing
        if importlib.util.find_spec("llama_cpp") is None:
            raise ServingError("llama-cpp-python is not installed: pip install 'ragate[local]'")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"llamacpp-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        if self._log_file is not None:  # a restart after the process died
            self._log_file.close()  # type: ignore[attr-defined]
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop())
        self._log_file = log
        self._process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            wait_until_healthy(self.url, timeout_s=timeout_s, still_running=self.running)
        except ServingError as exc:
            tail = self._log_tail()
            self.stop()
            raise ServingError(f"{exc}\n--- server log tail ---\n{tail}") from exc
        return self

    def stop(self, grace_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None

    def kill(self) -> None:
        """Die abruptly, as a crashed backend would (tests use this)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def _log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
