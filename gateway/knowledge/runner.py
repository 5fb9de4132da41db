"""The loop that runs queued ingestion jobs: in each API process, or in ``ragate worker``.

One job at a time per runner (writes to one base are serialised by its lock anyway, and
the parse and embed work already fills the process pool). While a job runs, its
progress is published every ``REPORT_EVERY_S`` and the runner's heartbeat renewed every
third of its TTL, from the event loop, so a long parse in the pool never silences it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError
from gateway.knowledge.jobs import JobBoard, Spec, failed, handed_back

if TYPE_CHECKING:
    from gateway.knowledge.service import KnowledgeService

log = logging.getLogger("ragate.jobs")

REPORT_EVERY_S = 0.25
POLL_S = 0.5


def runner_name() -> str:
    """Unique per process and readable in a job's failure: host, pid and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def remove_staged(spec: Spec) -> None:
    """The job owns its staged files; they go once it ran, failed or was reaped."""
    for folder in {Path(path).parent for _, path in spec.get("files", [])}:
        shutil.rmtree(folder, ignore_errors=True)


def ingest_job(spec: Spec) -> Any:
    """The rag.IngestJob of a queued spec, not run yet."""
    import rag

    return rag.IngestJob(spec["knowledge_base"],
                         [(Path(path), filename) for filename, path in spec["files"]],
                         job_id=spec["job_id"])


class JobRunner:
    def __init__(self, service: KnowledgeService, board: JobBoard, *, ttl_s: float = 15.0,
                 alive_file: Path | None = None) -> None:
        self.service = service
        self.board = board
        self.ttl_s = ttl_s
        self.alive_file = alive_file
        self.name = runner_name()
        self._in_hand: Any = None  # the rag.IngestJob running, to cancel when handed back
        self.jobs_run = 0
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> JobRunner:
        await self._beat()  # alive before it takes anything: a reaper must not fail it
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._take_loop()), loop.create_task(self._beat_loop())]
        return self

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Take nothing more; let the job in hand finish for up to ``timeout_s``, then hand
        it back to the queue, whole, for the next runner (a rolling update loses no
        upload). A job writes its base once, at its end, so a job handed back before that
        write stored nothing; one handed back during it finds its files unchanged."""
        self._stopping.set()
        take, beat = self._tasks or (None, None)
        if take is not None:
            done, _ = await asyncio.wait({take}, timeout=timeout_s)
            if not done:
                take.cancel()  # the take loop hands the job back as it unwinds
                with contextlib.suppress(asyncio.CancelledError):
                    await take
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait(self) -> None:
        await self._stopping.wait()

    async def _beat(self) -> None:
        await self.board.beat(self.name, self.ttl_s)
        if self.alive_file is not None:
            self.alive_file.touch()

    async def _beat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                await self._beat()
            except GatewayError as exc:  # the board is away: it will be back, or we are reaped
                log.warning("job runner %s: heartbeat failed: %s", self.name, exc)

    async def _take_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                spec = await self.board.take(self.name)
            except GatewayError as exc:
                log.warning("job runner %s: %s", self.name, exc)
                spec = None
            if spec is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), POLL_S)
                continue
            queued_again = False
            try:
                await self._run(spec)
            except asyncio.CancelledError:
                queued_again = await self._hand_back(spec)
                raise
            except Exception:
                log.exception("job %s failed in runner %s", spec["job_id"], self.name)
            finally:
                self._in_hand = None
                if not queued_again:  # else its staged files are the next runner's
                    self.jobs_run += 1
                    await asyncio.to_thread(remove_staged, spec)  # many files: off the loop
                    with contextlib.suppress(GatewayError):
                        await self.board.release(self.name, spec["job_id"])

    async def _hand_back(self, spec: Spec) -> bool:
        """Queue the job again (stop() ran out of time). False when nobody will take it: a
        board in this process fails it; a board that is away leaves it to the reaper,
        which fails it once this runner's heartbeat expires (never left running)."""
        if self._in_hand is not None:
            self._in_hand.cancel()  # its thread stops at the next file, writing nothing
        fresh = ingest_job(spec).progress().to_dict()  # its files' stages all queued again
        try:
            queued = await self.board.hand_back(self.name, spec,
                                                {**fresh, "message": handed_back(self.name)})
        except GatewayError as exc:
            log.warning("job %s: could not hand it back: %s", spec["job_id"], exc)
            return False
        if queued:
            log.info("job %s handed back to the queue by %s", spec["job_id"], self.name)
        return queued

    async def _run(self, spec: Spec) -> None:
        job = self._in_hand = ingest_job(spec)
        try:
            base = await self.service.writable_base(spec["knowledge_base"])
        except GatewayError as exc:  # deleted since the upload, or its model will not load
            await self.board.report(failed(job.progress().to_dict(), exc.message))
            return
        latest: list[Any] = [job.progress()]
        published: list[Any] = [None]

        def heard(progress: Any) -> None:  # a worker thread: hand over, the loop publishes
            latest[0] = progress

        async def publish() -> None:
            if latest[0] is not published[0]:
                published[0] = latest[0]
                await self.board.report(latest[0].to_dict())

        run = asyncio.ensure_future(self.service.run_job(job, base, heard))
        while not run.done():
            await asyncio.wait({run}, timeout=REPORT_EVERY_S)
            with contextlib.suppress(GatewayError):
                await publish()
        final = run.result()
        latest[0] = final
        started = time.monotonic()
        while True:  # the final report must land: a client polls until it does
            try:
                await publish()
                return
            except GatewayError as exc:
                if time.monotonic() - started > self.ttl_s:
                    log.error("job %s: final report lost: %s", job.id, exc)
                    return
                await asyncio.sleep(0.5)
