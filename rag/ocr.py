"""OCR of scanned pages and images: RapidOCR with the PP-OCRv4 Chinese/English models that
ship inside the ``rapidocr-onnxruntime`` wheel (the ``ocr`` extra), so nothing is
downloaded. One engine per process, built on first use.

Text comes back in reading order: boxes grouped into lines by their vertical overlap,
each line left to right, a blank line where the gap between lines is wider than a line.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from rag.cleaning import is_cjk

OcrMode = Literal["auto", "always", "never"]
OCR_MODES: tuple[str, ...] = ("auto", "always", "never")
# Rendered pages and images are scaled so that their longer side is at most this: the
# detector works at 2000 px anyway, and a hostile page size must not become gigapixels.
MAX_SIDE_PX = 3000
MAX_IMAGE_PIXELS = 80_000_000  # refuse images larger than this before decoding them
INSTALL_HINT = "OCR needs the ocr extra: pip install 'ragate[ocr]'"

# The ONNX runtime's threads per engine: -1 lets it take every core (a CLI run); the
# ingestion workers set 1, since the pool already has one worker per core.
threads = -1
_engine: Any = None
_lock = threading.Lock()


class OcrUnavailableError(RuntimeError):
    """The ocr extra is not installed."""


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("rapidocr_onnxruntime") is not None


def _get_engine() -> Any:
    global _engine
    with _lock:
        if _engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:
                raise OcrUnavailableError(INSTALL_HINT) from exc
            _engine = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=threads)
        return _engine


def read_image(image: Any) -> str:
    """The text of a PIL image or an RGB array, in reading order ("" when none)."""
    array = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else image
    engine = _get_engine()
    with _lock:  # one inference at a time per engine (its sessions are not re-entrant)
        result, _ = engine(array)
    return in_reading_order(result or [])


def in_reading_order(result: Sequence[Sequence[Any]]) -> str:
    """RapidOCR's ``[box, text, score]`` items as lines and paragraphs."""
    items = []
    for box, text, _score in result:
        ys = [point[1] for point in box]
        xs = [point[0] for point in box]
        if str(text).strip():
            items.append((min(ys), max(ys), min(xs), str(text).strip()))
    if not items:
        return ""
    items.sort(key=lambda item: (item[0] + item[1]) / 2)
    lines: list[list[tuple[float, float, float, str]]] = []
    for item in items:
        if lines and _same_line(lines[-1], item):
            lines[-1].append(item)
        else:
            lines.append([item])
    heights = sorted(max(i[1] for i in line) - min(i[0] for i in line) for line in lines)
    typical = heights[len(heights) // 2] or 1.0
    out: list[str] = []
    previous_bottom = None
    for line in lines:
        top = min(i[0] for i in line)
        if previous_bottom is not None:
            out.append("\n\n" if top - previous_bottom > typical else "\n")
        out.append(_join(sorted(line, key=lambda i: i[2])))
        previous_bottom = max(i[1] for i in line)
    return "".join(out)


def _same_line(line: list[tuple[float, float, float, str]],
               item: tuple[float, float, float, str]) -> bool:
    top, bottom = min(i[0] for i in line), max(i[1] for i in line)
    overlap = min(bottom, item[1]) - max(top, item[0])
    return overlap > 0.5 * min(bottom - top, item[1] - item[0])


def _join(items: Sequence[tuple[float, float, float, str]]) -> str:
    text = items[0][3]
    for item in items[1:]:
        gap = "" if is_cjk(text[-1]) or is_cjk(item[3][0]) else " "
        text += gap + item[3]
    return text


def scale_for(width: float, height: float, dpi: int = 200) -> float:
    """Render scale for a PDF page of ``width`` x ``height`` points: ``dpi``, capped."""
    return min(dpi / 72, MAX_SIDE_PX / max(width, height, 1))
