"""What every loader shares: the loader signature, its options and the content hash."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from rag.documents import Document


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """``ocr``: ``auto`` reads pages without a usable text layer (and image files) with
    OCR, ``always`` also reads the images inside pages that have text, ``never`` skips
    OCR. ``on_ocr_page`` hears each page OCR'd (1-based count), for progress."""

    ocr: str = "auto"
    on_ocr_page: Callable[[int], None] | None = None


DEFAULT_OPTIONS = LoadOptions()

# A loader turns a file's bytes into documents; ``source`` and ``content_hash`` go into
# every document's metadata. It raises LoaderError for files it cannot read.
Loader = Callable[[bytes, str, str, LoadOptions], list[Document]]


def content_hash(data: bytes) -> str:
    """The sha256 hex digest that identifies a file's content."""
    return hashlib.sha256(data).hexdigest()
