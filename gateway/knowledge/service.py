"""Knowledge bases seen from the gateway: every rag call runs in a worker thread.

Lifecycle: ``start()`` loads the embedding model in a thread (never on a request);
uploads are staged and queued on a job board (``gateway.knowledge.jobs``: this process,
or Redis for every replica), where a runner (``gateway.knowledge.runner``: here, or in
``ragate worker``) takes them one at a time, their files parsed and embedded in a pool
of worker processes (``rag.workers``), and reports their progress; opened bases are
cached and refreshed when another process (the CLI, a worker, a second replica)
published a newer version: every request reads the base's CURRENT file, so a replica
serves the newest version from its next request on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from gateway.errors import (
    BadRequestError,
    ConflictError,
    FeatureDisabledError,
    GatewayError,
    NotFoundError,
    PayloadTooLargeError,
    StoreUnavailableError,
)
from gateway.knowledge.jobs import JobBoard, LocalJobBoard
from gateway.knowledge.runner import JobRunner, remove_staged
from gateway.settings import KnowledgeConfig

log = logging.getLogger("ragate.knowledge")

COPY_CHUNK = 1024 * 1024


def knowledge_service(service: KnowledgeService | None, *, param: str | None = None
                      ) -> KnowledgeService:
    """The service, or the same 404 on every route when knowledge bases are off."""
    if service is None:
        raise FeatureDisabledError("knowledge bases", "knowledge_disabled",
                                   ": install ragate[rag] (knowledge.enabled)", param=param)
    return service


def translate(exc: Exception) -> GatewayError:
    """rag's errors, in the OpenAI error shape with the right status."""
    import rag

    if isinstance(exc, rag.KnowledgeBaseNotFoundError | rag.DocumentNotFoundError):
        return NotFoundError(str(exc), code="knowledge_base_not_found")
    if isinstance(exc, rag.KnowledgeBaseExistsError):
        return ConflictError(str(exc), code="knowledge_base_exists")
    if isinstance(exc, rag.KnowledgeBaseLockedError):
        return ConflictError(str(exc), code="knowledge_base_busy")
    if isinstance(exc, rag.UploadLimitError):
        return PayloadTooLargeError(str(exc))
    if isinstance(exc, rag.InvalidNameError | rag.EmbeddingMismatchError | ValueError):
        return BadRequestError(str(exc), code="invalid_knowledge_request")
    return GatewayError(f"knowledge base error: {exc}")


REAP_EVERY_S = 5.0


class KnowledgeService:
    def __init__(self, config: KnowledgeConfig, root: Path, board: JobBoard | None = None,
                 *, run_jobs: bool | None = None) -> None:
        self.config = config
        self.root = root
        self.embedder: Any = None
        self.store: Any = None
        self.board: JobBoard = board or LocalJobBoard()
        self.run_jobs = config.run_jobs if run_jobs is None else run_jobs
        self.runner: JobRunner | None = None
        self.alive_file: Path | None = None  # touched by the runner's heartbeat (a probe's)
        self._bases: dict[str, Any] = {}
        self._write_limiter = anyio.CapacityLimiter(1)
        # one embedding call at a time: the model runs one forward pass well, and a queue
        # of requests must not take every worker thread from the searches
        self._embed_limiter = anyio.CapacityLimiter(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self.pool: Any = None
        # each base is searched with the model it was built with: the default one, or
        # another that a create or a rebuild named (loaded once, by the manifest's hint)
        self._embedders: dict[str, Any] = {}

    async def start(self) -> None:
        import rag
        from rag.stores import open_stores
        from rag.workers import IngestPool, MiB, WorkerLimits, default_workers

        c = self.config
        token = os.environ.get(c.milvus_token_env) if c.milvus_token_env else None
        self.store = await anyio.to_thread.run_sync(lambda: open_stores(
            self.root, store=c.store, milvus_uri=c.milvus_uri, milvus_token=token))
        await self.board.open()
        if self.run_jobs and self.config.ingest_workers != 0:  # parsing and embedding off
            # the API process
            # one core stays the API's: at full speed on every core the workers, though
            # in SCHED_IDLE, slowed small chat requests by 20-32 % (caches and memory
            # they share), one core fewer by 5 % (README, ingestion benchmark)
            workers = self.config.ingest_workers or default_workers(reserve=1)
            self.pool = IngestPool(workers,
                                   WorkerLimits(self.config.worker_memory_mb * MiB,
                                                file_seconds=self.config.file_time_limit_s))
        path = self.config.embedding_model
        self.embedder = await anyio.to_thread.run_sync(lambda: rag.load_embedder(path))
        self._embedders[self.embedder.name] = self.embedder
        if self.pool is not None and self.config.warm_workers:
            self.pool.warm = getattr(self.embedder, "spec", None)
            await anyio.to_thread.run_sync(self.pool.start)  # spawning takes a moment
        loop = asyncio.get_running_loop()
        if self.board.shared:
            self._keep(loop.create_task(self._reap_loop()))
        if self.run_jobs:
            self.runner = await JobRunner(self, self.board, ttl_s=self.config.job_heartbeat_s,
                                          alive_file=self.alive_file).start()
        log.info("knowledge bases under %s, embedding model %s, jobs %s%s", self.root,
                 self.embedder.name, type(self.board).__name__,
                 "" if self.run_jobs else " (run by workers)")

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reap_loop(self) -> None:
        """Fail the jobs of runners that died (any process may: the check is atomic)."""
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            try:
                for spec in await self.board.reap():
                    log.warning("ingestion job %s failed: its runner died", spec["job_id"])
                    await anyio.to_thread.run_sync(remove_staged, spec)
            except GatewayError as exc:
                log.warning("job board: %s", exc)

    async def ping(self) -> None:
        """Raise StoreUnavailableError when the bases' folder cannot be read or written
        (a shared volume that went away), for /ready."""
        def usable() -> bool:
            return self.root.is_dir() and os.access(self.root, os.R_OK | os.W_OK | os.X_OK)
        if not await anyio.to_thread.run_sync(usable):
            raise StoreUnavailableError(f"knowledge store {self.root} is not readable and "
                                        "writable")
        milvus = self.store.milvus if self.store is not None else None
        if milvus is not None:
            try:
                await anyio.to_thread.run_sync(milvus.ping)
            except Exception as exc:  # whatever the client raises: it did not answer
                raise StoreUnavailableError(f"milvus at {milvus.uri} did not answer: "
                                            f"{type(exc).__name__}") from exc

    async def embed(self, texts: list[str]) -> tuple[Any, list[int]]:
        """Vectors (normalized float32 rows) and token counts of ``texts``, for the
        OpenAI embeddings endpoint; a text longer than the model reads is refused (the
        model would cut it silently)."""
        embedder = self.embedder
        limit = embedder.max_tokens

        def embed() -> tuple[Any, list[int]]:
            counts = [embedder.count_tokens(t, special_tokens=True) for t in texts]
            for i, n in enumerate(counts):
                if limit is not None and n > limit:
                    raise BadRequestError(
                        f"input[{i}] has {n} tokens; {embedder.name} reads at most {limit}",
                        param="input", code="context_length_exceeded")
            return embedder.embed(texts), counts

        return await anyio.to_thread.run_sync(embed, limiter=self._embed_limiter)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.stop(self.config.job_stop_grace_s)
        for task in list(self._tasks):
            task.cancel()
            await asyncio.wait({task}, timeout=5)
        if self.pool is not None:
            await anyio.to_thread.run_sync(self.pool.close)
        await self.board.close()

    async def _run(self, fn: Any, *args: Any, limiter: anyio.CapacityLimiter | None = None
                   ) -> Any:
        import rag

        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)
        except (rag.RagError, ValueError) as exc:
            raise translate(exc) from exc
        except Exception as exc:
            if type(exc).__module__.startswith("pymilvus"):  # Milvus away or refusing
                log.warning("milvus: %s", exc)
                raise StoreUnavailableError(f"milvus: {type(exc).__name__}") from exc
            raise

    # -- bases ----------------------------------------------------------------------------

    def _base(self, name: str) -> Any:
        """An opened base, refreshed if a newer version was published (worker thread):
        one read of its CURRENT file, or of its Milvus manifest, per request."""
        import rag

        base = self._bases.get(name)
        if base is not None:
            try:
                base.refresh()
                return base
            # deleted (maybe made again since), or rebuilt elsewhere with another model
            except (rag.KnowledgeBaseNotFoundError, rag.EmbeddingMismatchError):
                self._bases.pop(name, None)
        base = self.store.open(name, self._embedder_for(self.store.manifest(name)))
        self._bases[name] = base
        return base

    def _embedder_for(self, manifest: Any) -> Any:
        embedder = self._embedders.get(manifest.embedding_model)
        if embedder is None:
            embedder = self._load(manifest.embedding_path, "embedding_model")
            self._embedders[embedder.name] = embedder
        return embedder

    @staticmethod
    def _load(reference: str | None, param: str) -> Any:
        import rag

        try:
            return rag.load_embedder(reference)
        except (OSError, ValueError, RuntimeError) as exc:  # missing or not a model
            raise BadRequestError(f"{param}: cannot load {reference!r}: "
                                  f"{type(exc).__name__}", param=param,
                                  code="invalid_value") from exc

    async def create(self, name: str, index_kind: str, chunk_size: int | None,
                     chunk_overlap: int | None, ocr: str = "auto",
                     embedding_model: str | None = None, store: str | None = None
                     ) -> dict[str, Any]:
        import rag

        def create() -> Any:
            given: dict[str, Any] = {"size": chunk_size, "overlap": chunk_overlap}
            chunking = rag.ChunkingConfig(**{k: v for k, v in given.items() if v is not None})
            embedder = self.embedder
            if embedding_model is not None:
                embedder = self._load(embedding_model, "embedding_model")
                embedder = self._embedders.setdefault(embedder.name, embedder)
            return self.store.create(name, embedder, store=store, index_kind=index_kind,
                                     chunking=chunking, ocr=ocr)

        base = await self._run(create, limiter=self._write_limiter)
        self._bases[name] = base
        return describe(base.manifest)

    async def list_bases(self) -> list[dict[str, Any]]:
        infos = await self._run(self.store.list)
        return [{"name": i.name, "store": i.store, "embedding_model": i.embedding_model,
                 "dimension": i.dimension, "index_kind": i.index_kind,
                 "documents": i.documents, "chunks": i.chunks,
                 "version": i.version, "updated_at": int(i.updated_at),
                 "size_bytes": i.size_bytes} for i in infos]

    async def get(self, name: str) -> dict[str, Any]:
        base = await self._run(self._base, name)
        return describe(base.manifest)

    async def set_ocr(self, name: str, mode: str) -> dict[str, Any]:
        base = await self._run(self._base, name)
        await self._run(base.set_ocr, mode, limiter=self._write_limiter)
        return describe((await self._run(self._base, name)).manifest)

    async def delete(self, name: str) -> None:
        await self._run(self.store.delete, name, limiter=self._write_limiter)
        self._bases.pop(name, None)

    async def documents(self, name: str) -> list[dict[str, Any]]:
        base = await self._run(self._base, name)
        return [{"object": "knowledge_base.document", **asdict(d)}
                for d in await self._run(base.documents)]

    async def chunks(self, name: str, source: str, offset: int, limit: int) -> dict[str, Any]:
        base = await self._run(self._base, name)
        document, chunks = await self._run(base.chunks, source, offset, limit)
        return {"object": "list", "document": source, "total": document.chunks,
                "offset": offset, "limit": limit,
                "data": [{"object": "knowledge_base.chunk", "chunk_id": c.id,
                          "ordinal": c.ordinal, "page": c.metadata.page,
                          "start": c.metadata.start, "end": c.metadata.end, "text": c.text}
                         for c in chunks]}

    async def delete_document(self, name: str, source: str) -> None:
        base = await self._run(self._base, name)
        await self._run(base.delete_document, source, limiter=self._write_limiter)

    async def search(self, name: str, query: str, **overrides: Any) -> list[Any]:
        base = await self._run(self._base, name)
        return list(await self._run(lambda: base.search(query, **overrides)))

    # -- ingestion ------------------------------------------------------------------------

    def limits(self) -> Any:
        import rag

        c = self.config
        return rag.UploadLimits(c.max_file_bytes, c.max_files, c.max_upload_bytes)

    async def ingest(self, name: str, files: Sequence[tuple[str, Path]]) -> dict[str, Any]:
        """Queue a job over files already staged (the job owns and removes them)."""
        import rag

        staged = [[filename, str(path)] for filename, path in files]
        try:
            await self._run(self.store.manifest, name)  # 404 now, not in the job
            job = rag.IngestJob(name, [(path, filename) for filename, path in files])
            progress = job.progress().to_dict()
            await self.board.submit({"job_id": job.id, "knowledge_base": name,
                                     "files": staged}, progress)
        except BaseException:
            await anyio.to_thread.run_sync(remove_staged, {"files": staged})
            raise
        return progress

    async def writable_base(self, name: str) -> Any:
        """A base opened with its embedder, for a runner's job."""
        return await self._run(self._base, name)

    async def run_job(self, job: Any, base: Any, on_progress: Any) -> Any:
        """Run an ingestion job to its end (a failure is its report, never raised)."""
        return await anyio.to_thread.run_sync(
            lambda: job.run(base, on_progress=on_progress, pool=self.pool),
            limiter=self._write_limiter)

    async def job(self, job_id: str) -> dict[str, Any]:
        progress = await self.board.get(job_id)
        if progress is None:
            raise NotFoundError(f"no ingestion job {job_id}", code="job_not_found")
        return progress

    async def stage(self, uploads: Sequence[tuple[str | None, BinaryIO]]
                    ) -> list[tuple[str, Path]]:
        """Copy uploaded files (already spooled by the server) to a staging folder under the
        limits, in a worker thread; on any failure nothing is left behind."""
        import rag

        limits = self.limits()

        def copy() -> list[tuple[str, Path]]:
            limits.check_count(len(uploads))
            staging = self.root / ".uploads" / uuid.uuid4().hex
            staging.mkdir(parents=True)
            saved, total = [], 0
            try:
                for n, (given, source) in enumerate(uploads):
                    filename = rag.sanitize_filename(given or f"upload-{n}")
                    target = staging / f"{n:04d}-{filename}"
                    size = 0
                    with target.open("wb") as out:
                        while chunk := source.read(COPY_CHUNK):
                            size += len(chunk)
                            total += len(chunk)
                            limits.check_file(filename, size)
                            limits.check_total(total)
                            out.write(chunk)
                    saved.append((filename, target))
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            return saved

        return list(await self._run(copy))

    async def rebuild(self, name: str, embedding_model: str | None) -> dict[str, Any]:
        def rebuild() -> Any:
            if embedding_model is None:
                embedder = self._embedder_for(self.store.manifest(name))
            else:
                embedder = self._load(embedding_model, "embedding_model")
                embedder = self._embedders.setdefault(embedder.name, embedder)
            base = self.store.open(name)
            base.rebuild(embedder)
            return self.store.open(name, embedder)

        base = await self._run(rebuild, limiter=self._write_limiter)
        self._bases[name] = base
        return describe(base.manifest)


def describe(manifest: Any) -> dict[str, Any]:
    return {"object": "knowledge_base", **asdict(manifest)}


