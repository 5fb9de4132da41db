"""``ragate serve --workers N``: N gateway processes on one port, pre-forked by uvicorn.

One Python process uses about one core; a machine with more serves more with more
processes, each a full gateway on the same listening socket (the kernel spreads the
connections). The parent starts the local llama.cpp backends once, then hands every
worker the resolved settings (those backends included) through the environment, so no
worker starts a backend of its own.

What must agree across workers agrees the way it does across replicas, through the
stores: conversation locks and sticky-routing hints in Redis, rate limits in Redis, keys
in their store (re-read every ``auth.cache_ttl_s``), ingestion jobs on the Redis job
board, knowledge bases in their folders (each worker reloads a base whose CURRENT file
changed). A config that keeps any of them in process is refused for N > 1
(``blockers``) rather than quietly letting limits count per worker or two workers write
one conversation.
Health and breaker state are each worker's own, as each replica's are. Prometheus
metrics of all workers are served together (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gateway.settings import Settings, StoreKind

SETTINGS_ENV = "RAGATE_WORKER_SETTINGS"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client at import


def blockers(settings: Settings, knowledge_on: bool) -> list[str]:
    """Why this config cannot run in more than one process (empty: it can)."""
    found = []
    if settings.conversations.store is not StoreKind.REDIS:
        found.append("conversations.store is sqlite: conversation locks and routing hints "
                     "would be per process (use conversations.store: redis)")
    if settings.auth_enabled and not settings.limits_shared:
        found.append("auth.limits.store is local: every worker would count its own limits "
                     "(use auth.limits.store: redis)")
    if knowledge_on and settings.jobs_store is not StoreKind.REDIS:
        found.append("knowledge.jobs_store is sqlite: ingestion jobs would be known only to "
                     "the worker that queued them (use knowledge.jobs_store: redis)")
    if knowledge_on and (embedded := settings.embedded_milvus) is not None:
        found.append(embedded_milvus_reason(embedded))
    return found


def embedded_milvus_reason(folder: Path) -> str:
    return (f"knowledge bases are in the embedded milvus-lite folder {folder}, which one "
            f"process opens at a time: serve it with `milvus-lite server --data-dir {folder} "
            "--host 127.0.0.1 --port 19530` and set knowledge.milvus_uri: "
            "http://127.0.0.1:19530")


def default_workers(settings: Settings, knowledge_on: bool) -> int:
    """Every core when the state is shared, else 1 (the embedded default)."""
    return 1 if blockers(settings, knowledge_on) else max(os.cpu_count() or 1, 1)


def run(settings: Settings, workers: int, **uvicorn_options: Any) -> None:
    """Serve with ``workers`` processes until stopped (uvicorn supervises and restarts
    them); the metrics folder is made fresh for the run and removed after it."""
    import uvicorn

    metrics_dir = Path(tempfile.mkdtemp(prefix="ragate-metrics-"))
    os.environ[METRICS_ENV] = str(metrics_dir)
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    try:
        uvicorn.run("gateway.workers:worker_app", factory=True, workers=workers,
                    host=settings.server.host, port=settings.server.port, **uvicorn_options)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_app() -> Any:
    """The app of one worker process (uvicorn calls this in each)."""
    import logging
    import sys

    from gateway.app import create_app

    settings = Settings(**json.loads(os.environ[SETTINGS_ENV]))  # as load_settings builds it
    logging.basicConfig(level=settings.server.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return create_app(settings)
