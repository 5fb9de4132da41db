"""What every loader shares: the loader signature and the content hash."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from rag.documents import Document

# A loader turns a file's bytes into documents; ``source`` and ``content_hash`` go into
# every document's metadata. It raises LoaderError for files it cannot read.
Loader = Callable[[bytes, str, str], list[Document]]


def content_hash(data: bytes) -> str:
    """The sha256 hex digest that identifies a file's content."""
    return hashlib.sha256(data).hexdigest()
