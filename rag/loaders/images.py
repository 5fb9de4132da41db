"""Image files (scans, photos of pages, screenshots) read with OCR: one document per
frame (a multi-page TIFF is several pages)."""

from __future__ import annotations

import io

from rag import ocr
from rag.documents import Document, DocumentMetadata
from rag.errors import LoaderError
from rag.loaders.base import DEFAULT_OPTIONS, LoadOptions

MAX_FRAMES = 500


def load_image(data: bytes, source: str, content_hash: str,
               options: LoadOptions = DEFAULT_OPTIONS) -> list[Document]:
    if not data:
        raise LoaderError(source, "empty file")
    if options.ocr == "never":
        raise LoaderError(source, "an image needs OCR, and OCR is off for this knowledge base")
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise LoaderError(source, f"not a readable image ({exc})") from exc
    if image.width * image.height > ocr.MAX_IMAGE_PIXELS:  # before any pixel is decoded
        raise LoaderError(source, f"image is {image.width}x{image.height} pixels, more than "
                                  f"{ocr.MAX_IMAGE_PIXELS:,} (refused as a decompression bomb)")
    documents = []
    try:
        for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
            if number > MAX_FRAMES:
                break
            if frame.width * frame.height > ocr.MAX_IMAGE_PIXELS:  # each frame, undecoded
                raise LoaderError(source, f"page {number} is {frame.width}x{frame.height} "
                                          "pixels: refused as a decompression bomb")
            frame = frame.convert("RGB")
            side = max(frame.width, frame.height)
            if side > ocr.MAX_SIDE_PX:
                scale = ocr.MAX_SIDE_PX / side
                frame = frame.resize((int(frame.width * scale), int(frame.height * scale)))
            text = ocr.read_image(frame)
            if options.on_ocr_page is not None:
                options.on_ocr_page(number)
            if text.strip():
                documents.append(Document(text, DocumentMetadata(source, content_hash, number)))
    except ocr.OcrUnavailableError as exc:
        raise LoaderError(source, str(exc)) from exc
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise LoaderError(source, f"broken image ({exc})") from exc
    if not documents:
        raise LoaderError(source, "no text found in the image")
    return documents
