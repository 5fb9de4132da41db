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
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
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
    """``memory_bytes``: what reading one file may add to a worker's data segment, on top
    of what the worker holds (the interpreter, and the embedding models it loaded, which
    are not bounded); None: no bound. ``nice``: how much lower than the API's its CPU
    priority is; ``idle``: Linux's SCHED_IDLE class on top; ``file_seconds``: how long
    one file may take to read and embed (a parser caught in a pathological file would
    otherwise hold its worker, and the job, for ever)."""

    memory_bytes: int | None = 2048 * MiB
    nice: int = 10
    idle: bool = True
    file_seconds: float | None = 900.0  # reading and embedding one file (None: no limit)


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


def default_workers(reserve: int = 0) -> int:
    """One worker per core this process may use, less ``reserve`` cores kept for others
    (at least one worker)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - reserve)


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
        if self._executor is None:
            return
        # a worker blocks writing progress to a full pipe nobody reads (a run whose
        # caller stopped iterating): read it meanwhile, or shutting down would wait for ever
        done = threading.Event()

        def drain() -> None:
            while not done.is_set():
                self._drain(None)
                done.wait(0.05)

        reader = threading.Thread(target=drain, name="ingest-pool-close", daemon=True)
        reader.start()
        try:
            self._executor.shutdown(wait=True, cancel_futures=True)
        finally:
            done.set()
            reader.join()
        self._executor = None

    def run(self, tasks: Iterable[FileTask],
            on_message: Callable[[Message], None] | None = None) -> Iterator[FileOutcome]:
        """Outcomes in the order files finish; every task yields exactly one."""
        tasks = list(tasks)
        pool = self._pool()
        futures: dict[Future[FileOutcome], FileTask] = {pool.submit(_work, t): t for t in tasks}
        pending = set(futures)
        orphans: list[FileTask] = []
        try:
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
        finally:  # a cancelled job stops reading: the files not begun are not read at all
            for future in pending:
                future.cancel()
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
    _bound_memory(limits.memory_bytes)
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
        limits: WorkerLimits | None = _worker.get("limits")
        _bound_memory(None)  # the model (and torch) may take what they need
        try:
            try:
                import torch

                torch.set_num_threads(1)
            except ImportError:  # an embedder without torch
                pass
            embedders[spec] = spec.build()
        finally:
            _bound_memory(limits.memory_bytes if limits is not None else None)
    return embedders[spec]


def _bound_memory(budget: int | None) -> None:
    """The worker's data-segment limit: what it holds now (the interpreter, and the models
    it loaded) plus ``budget``, what reading one file may add; None lifts it. The bound is
    for files: a model the admin chose (bge-m3 is 2.2 GB) loads whatever the budget, and
    a zip bomb still fails at the budget."""
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = hard if budget is None else _data_bytes() + budget
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _data_bytes() -> int:
    """VmData: the private memory RLIMIT_DATA counts (0 where /proc cannot say)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _work(task: FileTask) -> FileOutcome:
    from rag.ingest import prepare_path

    started = time.perf_counter()
    _say(task, "parsing")
    limit = _worker["limits"].memory_bytes
    memory = (f"needs more memory than an ingestion worker may use for one file "
              f"({(limit or 0) // MiB} MiB, knowledge.worker_memory_mb)")
    try:
        embedder = _embedder(task.embedder) if task.embedder is not None else None
        splitter = splitter_for(task.chunking, embedder)
    except Exception as exc:  # no model, or a base that counts tokens without one
        return _outcome(task, None, f"cannot prepare the worker ({exc})", started)
    seconds = _worker["limits"].file_seconds
    try:
        with _time_limit(seconds) as renew:

            def read(pages: int) -> None:
                renew()  # each page OCR'd starts the limit again: a long scan is not stuck
                _say(task, "ocr", pages)

            options = LoadOptions(task.ocr, read)
            prepared, error = prepare_path(task.path, task.source, splitter, options,
                                           memory=memory)
            if prepared is None:
                return _outcome(task, None, error, started)
            parsed = time.perf_counter()
            vectors = None
            if embedder is not None and prepared.chunks:
                _say(task, "embedding", prepared.pages)
                vectors = np.ascontiguousarray(
                    embedder.embed([c.text for c in prepared.chunks]), dtype=np.float32)
            tokens = lexical_tokens(prepared.chunks)
    except FileTimeLimit:
        return _outcome(task, None, f"took longer than the {seconds:g} s a file may take to "
                                    "read and embed (knowledge.file_time_limit_s)", started)
    except MemoryError:
        return _outcome(task, None, memory, started)
    except Exception as exc:  # the embedder failed on this file's chunks: this file only
        return _outcome(task, None, f"cannot embed file ({type(exc).__name__}: {exc})", started)
    prepared = replace(prepared, vectors=vectors, tokens=tokens)
    return FileOutcome(task.index, task.source, prepared, None, _peak_rss(),
                       parse_s=parsed - started, embed_s=time.perf_counter() - parsed)


class FileTimeLimit(BaseException):
    """Raised in a worker by its alarm: a BaseException, so that no parser's ``except
    Exception`` turns it into a parse error and carries on."""


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[Callable[[], None]]:
    """SIGALRM after ``seconds`` in the worker's main thread, where tasks run; a parser in
    Python stops at its next bytecode, one in C when that call returns. Yields a function
    that starts the ``seconds`` again."""
    if not seconds:
        yield lambda: None
        return

    armed = [True]

    def expired(signum: int, frame: Any) -> None:
        if armed[0]:  # not once the block is over: a file that finished is not late
            raise FileTimeLimit

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        def renew() -> None:
            signal.setitimer(signal.ITIMER_REAL, seconds)

        yield renew
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
