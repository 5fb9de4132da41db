"""``ragate serving``: launch a local llama.cpp backend and route it; print engine commands.

``launch`` starts the server, waits for health, then registers it with a running gateway
(``POST /admin/backends``) and/or writes it into a gateway config YAML, and stays in the
foreground; Ctrl-C (SIGINT) or SIGTERM unregisters it and stops the server. The gateway is reached
over HTTP only: this package never imports it.
"""

from __future__ import annotations

import os
import shlex
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import click
import httpx
import yaml

from serving.bundled import resolve_gguf
from serving.errors import ServingError
from serving.launcher import LlamaCppServer
from serving.specs import Engine, ServeSpec


class _Errors(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ServingError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Errors)
def serving() -> None:
    """Launch model servers and print the commands that launch them."""


# --- the gateway, over HTTP ------------------------------------------------------------------

def backend_entry(url: str, model: str, name: str | None = None) -> dict[str, Any]:
    """A gateway backend (the ``backends:`` item / admin API body) for a llama.cpp server."""
    entry: dict[str, Any] = {"url": url, "kind": "llamacpp", "model": model}
    if name:
        entry["name"] = name
    return entry


def register_backend(gateway: str, admin_key: str | None, model: str, backend: dict[str, Any],
                     *, client: httpx.Client | None = None) -> dict[str, Any]:
    """``POST /admin/backends``; returns the gateway's description of the backend."""
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    body = {"model": model, "backend": backend}
    with _client(client) as http:
        try:
            response = http.post(gateway.rstrip("/") + "/admin/backends", json=body,
                                 headers=headers)
        except httpx.HTTPError as exc:
            raise ServingError(f"cannot reach the gateway at {gateway}: {exc}") from exc
    if response.status_code not in (200, 201):
        raise ServingError(f"the gateway refused the backend (HTTP {response.status_code}): "
                           f"{_error_message(response)}")
    data = response.json()
    return data if isinstance(data, dict) else {}


def unregister_backend(gateway: str, admin_key: str | None, name: str,
                       *, client: httpx.Client | None = None) -> None:
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    with _client(client) as http:
        try:
            response = http.delete(f"{gateway.rstrip('/')}/admin/backends/{name}",
                                   headers=headers)
        except httpx.HTTPError as exc:
            raise ServingError(f"cannot reach the gateway at {gateway}: {exc}") from exc
    if response.status_code not in (200, 204, 404):
        raise ServingError(f"the gateway kept backend {name!r} (HTTP {response.status_code}): "
                           f"{_error_message(response)}")


@contextmanager
def _client(client: httpx.Client | None) -> Iterator[httpx.Client]:
    if client is not None:
        yield client
        return
    with httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0)) as own:
        yield own


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def add_to_config(path: Path, model: str, backend: dict[str, Any],
                  context_window: int | None = None) -> bool:
    """Route ``model`` to ``backend`` in a gateway config YAML; False if already there.

    The file is rewritten atomically; YAML comments in it are not kept.
    """
    data: dict[str, Any] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is not None and not isinstance(loaded, dict):
            raise ServingError(f"{path}: expected a YAML mapping at the top")
        data = loaded or {}
    models = data.setdefault("models", [])
    if not isinstance(models, list):
        raise ServingError(f"{path}: `models` must be a list")
    entry = next((m for m in models if isinstance(m, dict) and m.get("name") == model), None)
    if entry is None:
        entry = {"name": model, "backends": []}
        models.append(entry)
    backends = entry.setdefault("backends", [])
    if any(isinstance(b, dict) and str(b.get("url", "")).rstrip("/") == backend["url"]
           for b in backends):
        return False
    backends.append(backend)
    if context_window and not entry.get("context_window"):
        entry["context_window"] = context_window
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        yaml.safe_dump(data, handle, sort_keys=False, allow_unicode=True)
    os.replace(tmp, path)
    return True


# --- launch -----------------------------------------------------------------------------------

@contextmanager
def _signals_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGINT both clean up like Ctrl-C, even where the shell started us with
    SIGINT ignored (a background job of a non-interactive shell)."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous: dict[signal.Signals, Any] = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def wait_while_running(server: LlamaCppServer, interval_s: float = 0.5) -> None:
    """Block until the server exits (an error) or Ctrl-C (KeyboardInterrupt propagates)."""
    while server.running():
        time.sleep(interval_s)
    raise ServingError(f"the llama.cpp server exited; see {server.log_path}")


@serving.command()
@click.argument("gguf")
@click.option("--model", "model_name", help="Public model name (default: the GGUF file stem).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Default: a free port.")
@click.option("--n-ctx", default=2048, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="llama.cpp threads (default: all cores).")
@click.option("--startup-timeout", default=120.0, show_default=True, type=float)
@click.option("--gateway", help="A running gateway's URL to register the backend with.")
@click.option("--admin-key", envvar="RAGATE_ADMIN_KEY", help="Admin key (env RAGATE_ADMIN_KEY).")
@click.option("--backend-name", help="Backend name in the gateway (default: host:port).")
@click.option("--public-url", help="URL the gateway should use (default: the server's).")
@click.option("--write-config", type=click.Path(dir_okay=False, path_type=Path),
              help="Add the backend to this gateway config YAML.")
@click.option("--keep-registered", is_flag=True,
              help="Leave the backend registered with --gateway on exit.")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None)
def launch(gguf: str, model_name: str | None, host: str, port: int | None, n_ctx: int,
           threads: int | None, startup_timeout: float, gateway: str | None,
           admin_key: str | None, backend_name: str | None, public_url: str | None,
           write_config: Path | None, keep_registered: bool, log_file: Path | None) -> None:
    """Serve GGUF (a path or bundled:smollm2) with llama.cpp until Ctrl-C, routed by a gateway."""
    name = model_name or resolve_gguf(gguf).stem
    server = LlamaCppServer(gguf, host=host, port=port, n_ctx=n_ctx,
                            n_threads=threads or os.cpu_count(), model_alias=name,
                            log_path=log_file)
    url = (public_url or (server.url if host not in ("0.0.0.0", "::")
                          else f"http://127.0.0.1:{server.port}")).rstrip("/")
    backend = backend_entry(url, name, backend_name)
    click.echo(f"starting llama.cpp for {name!r} ({server.gguf}) on {server.url} …", err=True)
    registered: str | None = None
    with _signals_as_interrupt():
        try:
            started = time.monotonic()
            server.start(timeout_s=startup_timeout)
            click.echo(f"healthy after {time.monotonic() - started:.1f} s (pid {server.pid}, "
                       f"log {server.log_path})", err=True)
            if gateway:
                described = register_backend(gateway, admin_key, name, backend)
                registered = str(described.get("name") or backend_name or "")
                click.echo(f"registered backend {registered!r} for model {name!r} with "
                           f"{gateway}", err=True)
            if write_config:
                added = add_to_config(write_config, name, backend, context_window=n_ctx)
                click.echo(f"{'added' if added else 'already in'} {write_config}: model "
                           f"{name!r} -> {url}", err=True)
            click.echo(f"serving {name!r} at {url}; Ctrl-C to stop", err=True)
            wait_while_running(server)
        except KeyboardInterrupt:
            click.echo("stopping …", err=True)
        finally:
            if gateway and registered and not keep_registered:
                try:
                    unregister_backend(gateway, admin_key, registered)
                    click.echo(f"unregistered {registered!r}", err=True)
                except ServingError as exc:
                    click.echo(f"warning: {exc}", err=True)
            server.stop()


# --- command ----------------------------------------------------------------------------------

@serving.command()
@click.argument("model")
@click.option("--engine", type=click.Choice([e.value for e in Engine]), required=True)
@click.option("--name", "served_name", help="Served model name (default: MODEL's last part).")
@click.option("--lora", "loras", multiple=True, metavar="NAME=PATH",
              help="A LoRA adapter served as its own model; repeatable.")
@click.option("--context-length", type=click.IntRange(min=1), default=None)
@click.option("--tp", "tensor_parallel", default=1, show_default=True,
              type=click.IntRange(min=1), help="Tensor parallel size.")
@click.option("--gpu-memory-fraction", type=float, default=None)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--max-lora-rank", type=click.IntRange(min=1), default=None)
@click.option("--runtime-lora", is_flag=True, help="Allow loading adapters after start.")
@click.option("--chat-template", help="A Jinja chat template file.")
@click.option("--modelfile", default="Modelfile", show_default=True, help="Ollama only.")
def command(model: str, engine: str, served_name: str | None, loras: tuple[str, ...],
            context_length: int | None, tensor_parallel: int,
            gpu_memory_fraction: float | None, host: str, port: int,
            max_lora_rank: int | None, runtime_lora: bool, chat_template: str | None,
            modelfile: str) -> None:
    """Print the command (with its environment) that serves MODEL on ENGINE."""
    adapters = {}
    for item in loras:
        adapter, sep, path = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected NAME=PATH", param_hint="--lora")
        adapters[adapter] = path
    spec = ServeSpec(model=model, served_name=served_name, lora_adapters=adapters,
                     context_length=context_length, tensor_parallel=tensor_parallel,
                     gpu_memory_fraction=gpu_memory_fraction, port=port, host=host,
                     max_lora_rank=max_lora_rank, runtime_lora=runtime_lora,
                     chat_template=chat_template)
    kind = Engine(engine)
    argv = spec.ollama_argv(modelfile) if kind is Engine.OLLAMA else spec.argv(kind)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in spec.env(kind).items())
    click.echo((env + " " if env else "") + shlex.join(argv))
    click.echo(f"# health: {spec.health_url(kind)}", err=True)
