"""Ingestion in worker processes: each file is read, parsed, cleaned, split and embedded
in a process of a pool, away from the API's event loop and its GIL.

A worker runs at a lower CPU priority (chat requests come first on a small machine), with
a data-segment limit (a hostile file that makes a parser balloon fails that file with a
memory error instead of taking the machine), and reports each file's stage (and each
page) on a queue while it works. A worker that dies (a crash, the kernel's OOM killer)
costs only the files it had: they are retried once, alone, in a fresh pool, and fail with
a reason if they kill that one too. Nothing here imports torch until a worker builds an
embedder.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing import get_context
from typing import Any

import numpy as np

from rag.embeddings import Embedder, EmbedderSpec
from rag.knowledge_base import PreparedFile, lexical_tokens, splitter_for
from rag.loaders.base import LoadOptions
from rag.snapshot import ChunkingConfig

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class WorkerLimits:
    """``memory_bytes``: each worker's data-segment limit (None: none); ``nice``: how much
    lower than the API's its CPU priority is; ``idle``: Linux's SCHED_IDLE class on top."""

    memory_bytes: int | None = 2048 * MiB
    nice: int = 10
    idle: bool = True


@dataclass(frozen=True, slots=True)
class FileTask:
    """One file of one job. ``embedder`` None: the worker only prepares the file."""

    job: str
    index: int
    path: str
    source: str
    chunking: ChunkingConfig
    embedder: EmbedderSpec | None = None
    ocr: str = "auto"


@dataclass(frozen=True, slots=True)
class FileOutcome:
    index: int
    source: str
    prepared: PreparedFile | None
    error: str | None = None
    peak_rss: int = 0  # the worker's peak resident memory so far, in bytes
    parse_s: float = 0.0
    embed_s: float = 0.0


# A worker's progress message: (job, file index, stage, pages done).
Message = tuple[str, int, str, int]


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class IngestPool:
    """A pool of ingestion workers, started on first use and reused across jobs."""

    def __init__(self, workers: int | None = None, limits: WorkerLimits | None = None,
                 warm: EmbedderSpec | None = None) -> None:
        """``warm``: an embedder each worker loads as it starts (see ``start``)."""
        self.workers = workers or default_workers()
        self.limits = limits or WorkerLimits()
        self.warm = warm
        self._context = get_context("spawn")  # never fork a process that runs threads
        self._queue: Any = None
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # a SimpleQueue writes each message to the pipe in put(), before the worker
            # returns its result, so the last drain of a run hears every stage (a Queue's
            # feeder thread could still hold them when the result came back)
            self._queue = self._context.SimpleQueue()
            self._executor = ProcessPoolExecutor(
                self.workers, mp_context=self._context, initializer=_start_worker,
                initargs=(self.limits, self._queue, self.warm))
        return self._executor

    def start(self) -> None:
        """Start every worker now, without waiting: each loads ``warm`` meanwhile, so the
        first upload does not pay the seconds a worker takes to start and load a model
        (the executor starts a process per task while none is idle)."""
        pool = self._pool()
        for _ in range(self.workers):
            pool.submit(_ready)

    def _reset(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._executor = None

    def run(self, tasks: Iterable[FileTask],
            on_message: Callable[[Message], None] | None = None) -> Iterator[FileOutcome]:
        """Outcomes in the order files finish; every task yields exactly one."""
        tasks = list(tasks)
        pool = self._pool()
        futures: dict[Future[FileOutcome], FileTask] = {pool.submit(_work, t): t for t in tasks}
        pending = set(futures)
        orphans: list[FileTask] = []
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            self._drain(on_message)
            for future in done:
                task = futures[future]
                try:
                    yield future.result()
                except BrokenProcessPool:
                    orphans.append(task)
                except Exception as exc:  # a result that cannot come back (pickling)
                    yield _failed(task, f"worker error ({type(exc).__name__}: {exc})")
        if orphans:
            self._reset()
        for task in sorted(orphans, key=lambda t: t.index):
            # alone, so that a file that kills its worker again is known to be the one
            try:
                future = self._pool().submit(_work, task)
                while not future.done():
                    wait([future], timeout=0.2)
                    self._drain(on_message)
                yield future.result()
            except BrokenProcessPool:
                self._reset()
                yield _failed(task, "the worker reading this file died (it may need more "
                                    "memory than the worker's limit, or crash a parser)")
            except Exception as exc:  # a result that cannot come back (pickling)
                yield _failed(task, f"worker error ({type(exc).__name__}: {exc})")
        self._drain(on_message)

    def _drain(self, on_message: Callable[[Message], None] | None) -> None:
        while True:
            try:
                if self._queue.empty():
                    return
                message = self._queue.get()
            except (OSError, ValueError, EOFError):
                return
            if on_message is not None and message[1] >= 0:
                on_message(message)


def _failed(task: FileTask, reason: str) -> FileOutcome:
    return FileOutcome(task.index, task.source, None, reason)


# -- in the worker process --------------------------------------------------------------

_worker: dict[str, Any] = {}


def _ready() -> None:
    """A task that does nothing: it makes the executor start a worker."""


def _start_worker(limits: WorkerLimits, messages: Any, warm: EmbedderSpec | None = None
                  ) -> None:
    # one core per worker: the pool is sized to the cores, and torch's or OpenMP's own
    # threads would only fight each other and the API process
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if limits.nice:
        os.nice(limits.nice)
    if limits.idle and hasattr(os, "SCHED_IDLE"):
        # SCHED_IDLE: the worker runs only when nothing else wants the core, and a chat
        # request's wake-up preempts it at once; nice alone still let ingestion double
        # the p50 of small chat requests on two cores
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:  # not permitted here: nice is what remains
            pass
    if limits.memory_bytes:
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        soft = limits.memory_bytes if hard == resource.RLIM_INFINITY else min(
            limits.memory_bytes, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    from rag import ocr

    ocr.threads = 1
    _worker.update(messages=messages, limits=limits, embedders={})
    if warm is not None:
        try:
            _embedder(warm)
        except Exception:  # the first file that needs it will say why
            pass


def _say(task: FileTask, stage: str, pages: int = 0) -> None:
    messages = _worker.get("messages")
    if messages is not None:
        messages.put((task.job, task.index, stage, pages))


def _embedder(spec: EmbedderSpec) -> Embedder:
    embedders: dict[EmbedderSpec, Embedder] = _worker.setdefault("embedders", {})
    if spec not in embedders:
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # an embedder without torch
            pass
        embedders[spec] = spec.build()
    return embedders[spec]


def _work(task: FileTask) -> FileOutcome:
    from rag.ingest import prepare_path

    started = time.perf_counter()
    _say(task, "parsing")
    limit = _worker["limits"].memory_bytes
    memory = f"needs more memory than an ingestion worker may use ({(limit or 0) // MiB} MiB)"
    try:
        embedder = _embedder(task.embedder) if task.embedder is not None else None
        splitter = splitter_for(task.chunking, embedder)
    except Exception as exc:  # no model, or a base that counts tokens without one
        return _outcome(task, None, f"cannot prepare the worker ({exc})", started)
    options = LoadOptions(task.ocr, lambda pages: _say(task, "ocr", pages))
    prepared, error = prepare_path(task.path, task.source, splitter, options, memory=memory)
    if prepared is None:
        return _outcome(task, None, error, started)
    parsed = time.perf_counter()
    try:
        vectors = None
        if embedder is not None and prepared.chunks:
            _say(task, "embedding", prepared.pages)
            vectors = np.ascontiguousarray(embedder.embed([c.text for c in prepared.chunks]),
                                           dtype=np.float32)
        tokens = lexical_tokens(prepared.chunks)
    except MemoryError:
        return _outcome(task, None, memory, started)
    except Exception as exc:  # the embedder failed on this file's chunks: this file only
        return _outcome(task, None, f"cannot embed file ({type(exc).__name__}: {exc})", started)
    prepared = replace(prepared, vectors=vectors, tokens=tokens)
    return FileOutcome(task.index, task.source, prepared, None, _peak_rss(),
                       parse_s=parsed - started, embed_s=time.perf_counter() - parsed)


def _outcome(task: FileTask, prepared: PreparedFile | None, error: str | None,
             started: float) -> FileOutcome:
    return FileOutcome(task.index, task.source, prepared, error, _peak_rss(),
                       parse_s=time.perf_counter() - started)


def _peak_rss() -> int:
    # VmHWM belongs to this program's memory map; ru_maxrss would also count the pages the
    # spawning process had when it forked this one, before the exec
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
