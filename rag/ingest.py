"""Ingestion jobs: load, clean and split files, then embed and store them, reporting progress."""

from __future__ import annotations

import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path, PurePosixPath, PureWindowsPath

from rag.cleaning import clean_pages
from rag.documents import Document, make_doc_id
from rag.errors import LoaderError, UploadLimitError
from rag.knowledge_base import KnowledgeBase, PreparedFile
from rag.loaders import load_bytes
from rag.loaders.base import content_hash
from rag.splitting import TextSplitter

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


def prepare_file(data: bytes, source: str, splitter: TextSplitter) -> PreparedFile:
    """Load, clean and split one file's bytes; raises LoaderError for unusable files."""
    documents = load_bytes(data, source)
    digest = content_hash(data)
    cleaned = clean_pages([d.text for d in documents])
    kept = [Document(text, d.metadata) for d, text in zip(documents, cleaned, strict=True)
            if text]
    if not kept:
        raise LoaderError(source, "no text left after cleaning")
    chunks = splitter.split_documents(kept, make_doc_id(source, digest))
    metadata = dict(documents[0].metadata.extra)
    return PreparedFile(source, digest, len(documents), chunks, metadata)


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class FileError:
    source: str
    reason: str


@dataclass(frozen=True, slots=True)
class IngestProgress:
    """A point-in-time view of a job; safe to hand to another thread or serialise.

    ``pages_total`` and ``chunks_total`` grow as files are parsed: they are exact once
    ``files_done == files_total``. ``status`` is ``done`` even when some files failed
    (see ``errors``); ``failed`` means nothing was stored.
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
        return data


ProgressCallback = Callable[[IngestProgress], None]


class IngestJob:
    """Ingest files into a knowledge base, in the calling thread, reporting progress.

    Create the job (status ``queued``; hand ``job.id`` to the client at once), then call
    ``run`` from a worker thread; ``progress()`` may be read from any thread meanwhile.
    Files that fail to load are reported in ``errors`` and never stop the others; all
    good files are stored together in one atomic write at the end.
    """

    def __init__(self, knowledge_base: str, files: Sequence[str | Path | tuple[str | Path, str]],
                 *, job_id: str | None = None) -> None:
        self.files: list[tuple[Path, str]] = []
        for item in files:
            path, source = item if isinstance(item, tuple) else (item, Path(item).name)
            self.files.append((Path(path), sanitize_filename(source)))
        self.id = job_id or uuid.uuid4().hex
        self._lock = threading.Lock()
        self._progress = IngestProgress(self.id, knowledge_base, files_total=len(self.files))

    def progress(self) -> IngestProgress:
        with self._lock:
            return self._progress

    def _update(self, callback: ProgressCallback | None, **changes) -> None:
        with self._lock:
            self._progress = replace(self._progress, **changes)
            snapshot = self._progress
        if callback is not None:
            callback(snapshot)

    def run(self, kb: KnowledgeBase, on_progress: ProgressCallback | None = None
            ) -> IngestProgress:
        if self.progress().status != JobStatus.QUEUED:
            raise RuntimeError(f"job {self.id} already ran")
        self._update(on_progress, status=JobStatus.RUNNING)
        try:
            splitter = kb.splitter()
            prepared: list[PreparedFile] = []
            errors: list[FileError] = []
            pages = chunks = 0
            for done, (path, source) in enumerate(self.files, start=1):
                try:
                    data = path.read_bytes()
                    item = prepare_file(data, source, splitter)
                    prepared.append(item)
                    pages += item.pages
                    chunks += len(item.chunks)
                except LoaderError as exc:
                    errors.append(FileError(source, exc.reason))
                except OSError as exc:
                    errors.append(FileError(source, f"cannot open file ({exc.strerror or exc})"))
                self._update(on_progress, files_done=done, pages_done=pages,
                             chunks_total=chunks, errors=tuple(errors))
            if not prepared:
                self._update(on_progress, status=JobStatus.FAILED, finished_at=time.time(),
                             message="no file could be read" if errors else "no files given")
                return self.progress()

            def embedded(done: int, total: int) -> None:
                self._update(on_progress, chunks_embedded=done, chunks_total=total)

            result = kb.add(prepared, on_progress=embedded)
        except Exception as exc:  # the job reports the failure; the base is unchanged
            self._update(on_progress, status=JobStatus.FAILED, finished_at=time.time(),
                         message=f"{type(exc).__name__}: {exc}")
            return self.progress()
        self._update(on_progress, status=JobStatus.DONE, finished_at=time.time(),
                     chunks_total=result.chunks_added, chunks_embedded=result.chunks_added,
                     added=tuple(result.added), replaced=tuple(result.replaced),
                     unchanged=tuple(result.unchanged),
                     duplicates=tuple(result.duplicates.items()), version=result.version)
        return self.progress()


def ingest_files(kb: KnowledgeBase, files: Sequence[str | Path | tuple[str | Path, str]], *,
                 on_progress: ProgressCallback | None = None) -> IngestProgress:
    """Run one ingestion job to completion in this thread and return its final progress."""
    return IngestJob(kb.name, files).run(kb, on_progress)
