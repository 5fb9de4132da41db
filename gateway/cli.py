"""The ``ragate`` command: the root group, ``serve`` and ``config``; packages add groups.

This is the one place that composes the packages' CLIs (rag's ``kb``, finetune's
``finetune``, serving's ``serving``); each group is imported lazily so a light install
(gateway only) still starts.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from gateway.conversations.cli import conversations
from gateway.errors import ConfigError
from gateway.settings import BackendConfig, BackendKind, ModelConfig, Settings, load_settings
from gateway.tenants.cli import keys, managed_keys_exist

_OPTIONAL_GROUPS = {
    "kb": ("rag.cli", "kb", "pip install 'ragate[rag]'"),
    "finetune": ("finetune.cli", "finetune", "pip install 'ragate[finetune]'"),
    "serving": ("serving.cli", "serving", "pip install 'ragate[local]'"),
}


class RagateGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_OPTIONAL_GROUPS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None or name not in _OPTIONAL_GROUPS:
            return command
        module_name, attr, hint = _OPTIONAL_GROUPS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise click.ClickException(
                f"`ragate {name}` needs more packages ({exc}): {hint}"
            ) from exc
        return getattr(module, attr)  # type: ignore[no-any-return]


def _load(config: str | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(cls=RagateGroup)
@click.version_option("0.1.0", prog_name="ragate")
def main() -> None:
    """ragate: a RAG-enabled chat service with an OpenAI-compatible model gateway."""


config_option = click.option(
    "--config", "-c", type=click.Path(dir_okay=False), envvar="RAGATE_CONFIG",
    help="YAML config file (env: RAGATE_CONFIG). Without one, embedded defaults apply.",
)


@main.command()
@config_option
@click.option("--host", help="Override server.host")
@click.option("--port", type=int, help="Override server.port")
@click.option("--no-local", is_flag=True, help="Do not start the local llama.cpp backends")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Gateway processes on the port (default: one per core when the config "
                   "keeps its state in Redis, else 1)")
def serve(config: str | None, host: str | None, port: int | None, no_local: bool,
          workers: int | None) -> None:
    """Run the gateway (and the local llama.cpp backends the config names)."""
    import uvicorn

    from gateway import workers as prefork
    from gateway.app import check_exposure, create_app, knowledge_enabled

    settings = _load(config)
    if host:
        settings.server.host = host
    if port:
        settings.server.port = port
    logging.basicConfig(
        level=settings.server.log_level.upper(), stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per backend call is noise
    try:
        # fail before starting backends (the app checks again, and warns)
        check_exposure(settings, warn=False, managed_keys=managed_keys_exist(settings))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    knowledge_on = knowledge_enabled(settings)
    processes = workers or prefork.default_workers(settings, knowledge_on)
    reasons = prefork.blockers(settings, knowledge_on) if processes > 1 else []
    if reasons:
        raise click.ClickException(
            f"--workers {processes} needs the state every worker shares outside the "
            "process:\n  - " + "\n  - ".join(reasons))
    servers = {} if no_local else _start_local_backends(settings)  # once, for every worker
    supervisor = _supervise(servers, settings) if servers else None
    if not settings.models:
        raise click.ClickException("no models configured: add `models:` or `local_backends:`")
    options: dict[str, Any] = {"log_level": settings.server.log_level, "access_log": False,
                               "timeout_graceful_shutdown": 10}
    try:
        if processes > 1:
            click.echo(f"serving with {processes} worker processes", err=True)
            prefork.run(settings, processes, **options)
        else:
            uvicorn.run(create_app(settings), host=settings.server.host,
                        port=settings.server.port, **options)
    finally:
        if supervisor is not None:
            supervisor.stop()  # first, or it restarts what we stop
            shutil.rmtree(supervisor.state_file.parent, ignore_errors=True)
        for server in servers.values():
            server.stop()


@main.command()
@config_option
@click.option("--alive-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Touched at every heartbeat (for a liveness probe)")
def worker(config: str | None, alive_file: Path | None) -> None:
    """Run queued ingestion jobs (from Redis) away from the API replicas."""
    import asyncio

    from gateway.knowledge.worker import WorkerConfigError, check_worker_settings, run_worker

    settings = _load(config)
    logging.basicConfig(level=settings.server.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        check_worker_settings(settings)
    except WorkerConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    ran = asyncio.run(run_worker(settings, alive_file))
    click.echo(f"worker stopped after {ran} job(s)", err=True)


def _supervise(servers: dict[str, Any], settings: Settings) -> Any:
    """Restart a local backend that dies; its state file is what the workers report."""
    from serving.supervisor import STATE_ENV, Supervisor

    state_dir = Path(tempfile.mkdtemp(prefix="ragate-supervisor-"))
    os.environ[STATE_ENV] = str(state_dir / "local-backends.json")
    timeout = max(local.startup_timeout_s for local in settings.local_backends)
    return Supervisor(servers, Path(os.environ[STATE_ENV]), startup_timeout_s=timeout).start()


def _start_local_backends(settings: Settings) -> dict[str, Any]:
    """Start each ``local_backends`` entry and route its model to it."""
    if not settings.local_backends:
        return {}
    from serving import LlamaCppServer, ServingError

    started: dict[str, Any] = {}
    try:
        for local in settings.local_backends:
            server = LlamaCppServer(
                local.gguf, host=local.host, port=local.port, n_ctx=local.n_ctx,
                n_threads=local.n_threads or os.cpu_count(), model_alias=local.model,
            )
            click.echo(f"starting llama.cpp for model {local.model!r} ({server.gguf.name}) "
                       f"on {server.url} …", err=True)
            server.start(timeout_s=local.startup_timeout_s)
            name = f"local-{local.model}"
            started[name] = server
            backend = BackendConfig(url=server.url, kind=BackendKind.LLAMACPP,
                                    model=local.model, name=name)
            entry = next((m for m in settings.models if m.name == local.model), None)
            if entry is None:
                settings.models.append(ModelConfig(name=local.model, backends=[backend],
                                                   context_window=local.n_ctx))
            else:
                entry.backends.append(backend)
                entry.context_window = entry.context_window or local.n_ctx
    except ServingError as exc:
        for server in started.values():
            server.stop()
        raise click.ClickException(str(exc)) from exc
    return started


main.add_command(conversations)
main.add_command(keys)


@main.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@config_option
def config_check(config: str | None) -> None:
    """Validate the config and print it as resolved (keys redacted)."""
    settings = _load(config)
    data = settings.model_dump(mode="json")
    for key in data["auth"]["keys"]:
        key["key"] = "…" + key["key"][-4:]
    click.echo(json.dumps(data, indent=2))
    click.echo(f"ok: {len(settings.models)} model(s), {len(settings.auth.keys)} key(s)", err=True)
