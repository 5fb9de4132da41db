"""Errors raised by the rag package.

    RagError
    ├── LoaderError                  a file could not be read (carries source and reason)
    ├── InvalidNameError             a knowledge base name that is unsafe as a folder name
    ├── KnowledgeBaseNotFoundError
    ├── KnowledgeBaseExistsError
    ├── KnowledgeBaseCorruptError    no loadable snapshot in a knowledge base folder
    ├── KnowledgeBaseLockedError     another process is writing to the knowledge base
    ├── DocumentNotFoundError
    ├── EmbeddingMismatchError       the embedder is not the one that built the base
    ├── EmbedderMissingError         an operation needs an embedder the base was opened without
    └── UploadLimitError             too many / too large files (the gateway answers 413)
"""

from __future__ import annotations


class RagError(Exception):
    """Base class of every error this package raises on purpose."""


class LoaderError(RagError):
    """A file could not be turned into documents; the batch it belongs to carries on."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class InvalidNameError(RagError, ValueError):
    """A knowledge base name that would not be a safe folder name."""


class KnowledgeBaseNotFoundError(RagError, LookupError):
    """No knowledge base of that name under the store's root."""


class KnowledgeBaseExistsError(RagError):
    """A knowledge base of that name already exists."""


class KnowledgeBaseCorruptError(RagError):
    """The folder exists but holds no snapshot that loads."""


class KnowledgeBaseLockedError(RagError):
    """Another writer holds the knowledge base's lock."""


class DocumentNotFoundError(RagError, LookupError):
    """No document with that source name in the knowledge base."""


class EmbeddingMismatchError(RagError):
    """The embedder offered does not match the model that built the knowledge base."""

    def __init__(self, expected: str, expected_dim: int, got: str, got_dim: int) -> None:
        super().__init__(
            f"knowledge base was built with embedding model {expected!r} ({expected_dim} dims), "
            f"got {got!r} ({got_dim} dims); open it with the same model or rebuild it"
        )
        self.expected = expected
        self.expected_dim = expected_dim
        self.got = got
        self.got_dim = got_dim


class UploadLimitError(RagError):
    """An upload exceeds a size or count limit (maps to HTTP 413)."""

    def __init__(self, message: str, *, limit: int, actual: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.actual = actual


class EmbedderMissingError(RagError):
    """An operation needs an embedder but the knowledge base was opened without one."""
