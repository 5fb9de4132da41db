"""Ingestion jobs: load, clean and split files, then embed and store them, reporting progress."""

from __future__ import annotations

import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from rag.cleaning import clean_pages
from rag.documents import Document, make_doc_id
from rag.errors import LoaderError, RagError, UploadLimitError
from rag.knowledge_base import KnowledgeBase, PreparedFile
from rag.loaders import load_bytes
from rag.loaders.base import DEFAULT_OPTIONS, LoadOptions, content_hash
from rag.splitting import TextSplitter

if TYPE_CHECKING:
    from rag.workers import IngestPool

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """Caps on one upload; exceeding one raises UploadLimitError (HTTP 413 at the gateway)."""

    max_file_bytes: int = 50 * MiB
    max_files: int = 100
    max_total_bytes: int = 200 * MiB

    def __post_init__(self) -> None:
        if min(self.max_file_bytes, self.max_files, self.max_total_bytes) <= 0:
            raise ValueError("upload limits must be positive")

    def check_count(self, count: int) -> None:
        if count > self.max_files:
            raise UploadLimitError(f"too many files: {count} (at most {self.max_files} per upload)",
                                   limit=self.max_files, actual=count)

    def check_file(self, name: str, size: int) -> None:
        if size > self.max_file_bytes:
            raise UploadLimitError(
                f"file {name!r} is {_human(size)}, over the {_human(self.max_file_bytes)} limit",
                limit=self.max_file_bytes, actual=size)

    def check_total(self, total: int) -> None:
        if total > self.max_total_bytes:
            raise UploadLimitError(
                f"upload is {_human(total)} in total, "
                f"over the {_human(self.max_total_bytes)} limit",
                limit=self.max_total_bytes, actual=total)


def check_upload_limits(files: Sequence[tuple[str, int]], limits: UploadLimits) -> None:
    """Check ``(name, size in bytes)`` pairs against ``limits``; raises UploadLimitError."""
    limits.check_count(len(files))
    for name, size in files:
        limits.check_file(name, size)
    limits.check_total(sum(size for _, size in files))


def _human(size: int) -> str:
    return f"{size / MiB:.1f} MiB" if size >= MiB else f"{size} bytes"


_RESERVED = set('<>:"/\\|?*')
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                    *(f"LPT{i}" for i in range(1, 10))}


def sanitize_filename(name: str, *, max_bytes: int = 200, default: str = "upload") -> str:
    """A file name safe to store: no directories, no traversal, no control characters.

    Keeps only the last path component (either separator), NFC-normalises, replaces
    reserved characters with ``_``, strips leading dots and spaces (no hidden files, no
    ``..``), defuses Windows device names, and shortens to ``max_bytes`` of UTF-8 while
    keeping the extension. Chinese and other non-ASCII names are kept.
    """
    name = unicodedata.normalize("NFC", name or "")
    name = PureWindowsPath(PurePosixPath(name.replace("\x00", "")).name).name
    name = "".join("_" if ch in _RESERVED or unicodedata.category(ch)[0] == "C" else ch
                   for ch in name)
    name = name.strip().lstrip(". ").rstrip(". ")
    if not name:
        return default
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    if stem.upper() in _WINDOWS_DEVICES:
        stem = "_" + stem
    suffix = f".{ext}" if ext else ""
    if len(suffix.encode()) > max_bytes // 2:
        suffix = ""
    while len((stem + suffix).encode()) > max_bytes:
        stem = stem[:-1]
    return (stem + suffix) or default


def prepare_file(data: bytes, source: str, splitter: TextSplitter,
                 options: LoadOptions = DEFAULT_OPTIONS) -> PreparedFile:
    """Load, clean and split one file's bytes; raises LoaderError for unusable files."""
    documents = load_bytes(data, source, options)
    digest = content_hash(data)
    cleaned = clean_pages([d.text for d in documents])
    kept = [Document(text, d.metadata) for d, text in zip(documents, cleaned, strict=True)
            if text]
    if not kept:
        raise LoaderError(source, "no text left after cleaning")
    chunks = splitter.split_documents(kept, make_doc_id(source, digest))
    metadata = dict(documents[0].metadata.extra)
    return PreparedFile(source, digest, len(documents), chunks, metadata)


def prepare_path(path: str | Path, source: str, splitter: TextSplitter,
                 options: LoadOptions = DEFAULT_OPTIONS, *,
                 memory: str = "needs more memory than this process could get"
                 ) -> tuple[PreparedFile | None, str | None]:
    """``prepare_file`` on a file on disk, with every failure turned into that file's
    reason (``memory``: what a MemoryError says), so that one file never fails a job."""
    try:
        return prepare_file(Path(path).read_bytes(), source, splitter, options), None
    except LoaderError as exc:
        return None, exc.reason
    except MemoryError:
        return None, memory
    except OSError as exc:
        return None, f"cannot open file ({exc.strerror or exc})"
    except Exception as exc:  # a cleaning or splitting bug on hostile input: this file only
        return None, f"cannot read file ({type(exc).__name__}: {exc})"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class FileStage(StrEnum):
    """Where one file of a job is; the last four are final."""

    QUEUED = "queued"
    PARSING = "parsing"
    OCR = "ocr"
    EMBEDDING = "embedding"
    INDEXED = "indexed"
    UNCHANGED = "unchanged"
    DUPLICATE = "duplicate"
    FAILED = "failed"


class JobCancelled(RagError):
    """The job was cancelled before its write (``IngestJob.cancel``)."""


@dataclass(frozen=True, slots=True)
class FileError:
    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class FileState:
    source: str
    stage: FileStage = FileStage.QUEUED
    pages: int = 0
    chunks: int = 0
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """A point-in-time view of a job; safe to hand to another thread or serialise.

    ``pages_total`` and ``chunks_total`` grow as files are parsed: they are exact once
    ``files_done == files_total``. ``status`` is ``done`` even when some files failed
    (see ``errors``); ``failed`` means nothing was stored. ``files`` holds each file's
    stage, in upload order.
    """

    job_id: str
    knowledge_base: str
    status: JobStatus = JobStatus.QUEUED
    files_total: int = 0
    files_done: int = 0
    pages_done: int = 0
    chunks_total: int = 0
    chunks_embedded: int = 0
    errors: tuple[FileError, ...] = ()
    added: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    duplicates: tuple[tuple[str, str], ...] = ()
    files: tuple[FileState, ...] = ()
    message: str | None = None
    version: int | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def to_dict(self) -> dict:
        from dataclasses import asdict

        data = asdict(self)
        data["status"] = self.status.value
        data["errors"] = [{"source": e.source, "reason": e.reason} for e in self.errors]
        data["duplicates"] = [{"source": s, "duplicate_of": d} for s, d in self.duplicates]
        data["files"] = [{**asdict(f), "stage": f.stage.value} for f in self.files]
        return data


ProgressCallback = Callable[[IngestProgress], None]
DUPLICATE_NAME = "another file in this upload has the same name (after sanitising)"


class IngestJob:
    """Ingest files into a knowledge base, reporting progress.

    Create the job (status ``queued``; hand ``job.id`` to the client at once), then call
    ``run`` from a worker thread; ``progress()`` may be read from any thread meanwhile.
    With an ``IngestPool`` the files are parsed (and embedded, where the base's embedder
    can be rebuilt in a worker) in worker processes; without one, in this thread. Files
    that fail are reported in ``errors`` and never stop the others; two files with the
    same name fail the second; all good files are stored together in one atomic write.
    """

    def __init__(self, knowledge_base: str, files: Sequence[str | Path | tuple[str | Path, str]],
                 *, job_id: str | None = None) -> None:
        self.files: list[tuple[Path, str]] = []
        for item in files:
            path, source = item if isinstance(item, tuple) else (item, Path(item).name)
            self.files.append((Path(path), sanitize_filename(source)))
        self.id = job_id or uuid.uuid4().hex
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self._progress = IngestProgress(self.id, knowledge_base, files_total=len(self.files),
                                        files=tuple(FileState(s) for _, s in self.files))

    def cancel(self) -> None:
        """Stop at the next file (the runner's process is stopping): the job fails before
        it writes anything, unless its one write to the base has begun."""
        self._cancelled.set()

    def progress(self) -> IngestProgress:
        with self._lock:
            return self._progress

    def _update(self, callback: ProgressCallback | None, **changes) -> None:
        with self._lock:
            self._progress = replace(self._progress, **changes)
            snapshot = self._progress
        if callback is not None:
            callback(snapshot)

    def _set_file(self, callback: ProgressCallback | None, index: int, **changes) -> None:
        with self._lock:
            files = list(self._progress.files)
            if files[index].stage in _FINAL and "stage" in changes:
                return  # a late message from a worker about a file already finished
            files[index] = replace(files[index], **changes)
            self._progress = replace(self._progress, files=tuple(files))
            snapshot = self._progress
        if callback is not None:
            callback(snapshot)

    def run(self, kb: KnowledgeBase, on_progress: ProgressCallback | None = None,
            pool: IngestPool | None = None) -> IngestProgress:
        if self.progress().status != JobStatus.QUEUED:
            raise RuntimeError(f"job {self.id} already ran")
        self._update(on_progress, status=JobStatus.RUNNING)
        try:
            prepared = self._prepare(kb, on_progress, pool)
            if not prepared:
                errors = self.progress().errors
                self._update(on_progress, status=JobStatus.FAILED, finished_at=time.time(),
                             message="no file could be read" if errors else "no files given")
                return self.progress()
            done_before = self.progress().chunks_embedded
            if self._cancelled.is_set():
                raise JobCancelled(f"job {self.id} was cancelled before it was written")

            def embedded(done: int, total: int) -> None:
                if self._cancelled.is_set():  # the base's write undoes what it began
                    raise JobCancelled(f"job {self.id} was cancelled while embedding")
                self._update(on_progress, chunks_embedded=done_before + done)

            result = kb.add([f for _, f in prepared], on_progress=embedded)
        except Exception as exc:  # the job reports the failure; the base is unchanged
            self._update(on_progress, status=JobStatus.FAILED, finished_at=time.time(),
                         message=f"{type(exc).__name__}: {exc}")
            return self.progress()
        final = {**{s: FileStage.INDEXED for s in result.added + result.replaced},
                 **{s: FileStage.UNCHANGED for s in result.unchanged},
                 **{s: FileStage.DUPLICATE for s in result.duplicates}}
        for index, _ in prepared:
            self._set_file(None, index, stage=final.get(self.files[index][1], FileStage.INDEXED))
        self._update(on_progress, status=JobStatus.DONE, finished_at=time.time(),
                     chunks_total=result.chunks_added, chunks_embedded=result.chunks_added,
                     added=tuple(result.added), replaced=tuple(result.replaced),
                     unchanged=tuple(result.unchanged),
                     duplicates=tuple(result.duplicates.items()), version=result.version)
        return self.progress()

    def _prepare(self, kb: KnowledgeBase, on_progress: ProgressCallback | None,
                 pool: IngestPool | None) -> list[tuple[int, PreparedFile]]:
        """Every file loaded, cleaned and split (and embedded, in a pool that can), in
        upload order; failures go to ``errors`` and the file states."""
        seen: set[str] = set()
        todo: list[int] = []
        for index, (_, source) in enumerate(self.files):
            if source in seen:
                self._fail(on_progress, index, DUPLICATE_NAME)
            else:
                seen.add(source)
                todo.append(index)
        prepared: dict[int, PreparedFile] = {}
        outcomes = (self._in_pool(kb, todo, pool, on_progress) if pool is not None
                    else self._in_thread(kb, todo, on_progress))
        for index, item, error in outcomes:
            if self._cancelled.is_set():
                raise JobCancelled(f"job {self.id} was cancelled before it was written")
            if error is not None or item is None:
                self._fail(on_progress, index, error or "not prepared")
                continue
            prepared[index] = item
            progress = self.progress()
            self._set_file(None, index, stage=FileStage.EMBEDDING, pages=item.pages,
                           chunks=len(item.chunks))
            embedded = len(item.chunks) if item.vectors is not None else 0
            self._update(on_progress, files_done=progress.files_done + 1,
                         pages_done=progress.pages_done + item.pages,
                         chunks_total=progress.chunks_total + len(item.chunks),
                         chunks_embedded=progress.chunks_embedded + embedded)
        return sorted(prepared.items())

    def _fail(self, on_progress: ProgressCallback | None, index: int, reason: str) -> None:
        source = self.files[index][1]
        self._set_file(None, index, stage=FileStage.FAILED, reason=reason)
        progress = self.progress()
        self._update(on_progress, files_done=progress.files_done + 1,
                     errors=(*progress.errors, FileError(source, reason)))

    def _in_thread(self, kb: KnowledgeBase, todo: list[int],
                   on_progress: ProgressCallback | None
                   ) -> Iterator[tuple[int, PreparedFile | None, str | None]]:
        splitter = kb.splitter()
        for index in todo:
            path, source = self.files[index]
            self._set_file(on_progress, index, stage=FileStage.PARSING)

            def read(pages: int, index: int = index) -> None:
                self._set_file(on_progress, index, stage=FileStage.OCR, pages=pages)

            yield index, *prepare_path(path, source, splitter,
                                       LoadOptions(kb.manifest.ocr, read))

    def _in_pool(self, kb: KnowledgeBase, todo: list[int], pool: IngestPool,
                 on_progress: ProgressCallback | None
                 ) -> Iterator[tuple[int, PreparedFile | None, str | None]]:
        from rag.workers import FileTask

        spec = getattr(kb.embedder, "spec", None)
        chunking = kb.manifest.chunking
        tasks = [FileTask(self.id, index, str(self.files[index][0]), self.files[index][1],
                          chunking, spec, kb.manifest.ocr) for index in todo]

        def heard(message: tuple[str, int, str, int]) -> None:
            job, index, stage, pages = message
            if job == self.id:
                self._set_file(on_progress, index, stage=FileStage(stage), pages=pages)

        for outcome in pool.run(tasks, heard):
            yield outcome.index, outcome.prepared, outcome.error


_FINAL = {FileStage.INDEXED, FileStage.UNCHANGED, FileStage.DUPLICATE, FileStage.FAILED}


def ingest_files(kb: KnowledgeBase, files: Sequence[str | Path | tuple[str | Path, str]], *,
                 on_progress: ProgressCallback | None = None,
                 pool: IngestPool | None = None) -> IngestProgress:
    """Run one ingestion job to completion and return its final progress."""
    return IngestJob(kb.name, files).run(kb, on_progress, pool)
