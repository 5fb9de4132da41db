"""``ragate worker``: run the queued ingestion jobs away from the API replicas.

The worker is a knowledge service without an API: it loads the embedding model, starts
its pool of parse-and-embed processes and a job runner on the Redis job board, and
stops on SIGTERM or SIGINT after the job in hand (Kubernetes' grace period). It needs
the API replicas' job board (Redis) and their knowledge root (the shared volume the
uploads are staged on).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from gateway.knowledge.jobs import job_board
from gateway.knowledge.service import KnowledgeService
from gateway.settings import Settings, StoreKind
from gateway.workers import embedded_milvus_reason

log = logging.getLogger("ragate.worker")


class WorkerConfigError(ValueError):
    pass


def check_worker_settings(settings: Settings) -> None:
    if settings.jobs_store is not StoreKind.REDIS:
        raise WorkerConfigError(
            "ragate worker takes jobs from Redis: set knowledge.jobs_store: redis (or "
            "conversations.store: redis) in the API replicas' config and in this one")
    if (embedded := settings.embedded_milvus) is not None:  # the API replicas hold it open
        raise WorkerConfigError(embedded_milvus_reason(embedded))


async def run_worker(settings: Settings, alive_file: Path | None = None) -> int:
    """Run jobs until a signal; returns how many this worker ran."""
    check_worker_settings(settings)
    service = KnowledgeService(settings.knowledge, settings.knowledge_root,
                               job_board(settings), run_jobs=True)
    service.alive_file = alive_file
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    assert service.runner is not None
    log.info("worker %s taking ingestion jobs for %s", service.runner.name,
             settings.knowledge_root)
    try:
        await stop.wait()
        log.info("worker %s stopping after the job in hand", service.runner.name)
    finally:
        ran = service.runner.jobs_run
        await service.close()
    return ran
