"""PDF loader: pdfplumber, page by page, keeping 1-based page numbers; ruled tables come
out as Markdown tables where they stand in the text; scanned pages are read with OCR."""

from __future__ import annotations

import io
from typing import Any

from rag import ocr
from rag.documents import Document, DocumentMetadata
from rag.errors import LoaderError
from rag.loaders.base import DEFAULT_OPTIONS, LoadOptions
from rag.loaders.tables import render_table
from rag.ocr import OcrUnavailableError


def load_pdf(data: bytes, source: str, content_hash: str,
             options: LoadOptions = DEFAULT_OPTIONS) -> list[Document]:
    """One document per page that has text; a page without a usable text layer (a scan)
    is read with OCR unless ``options.ocr`` is ``never``, and with ``always`` the images
    on pages that have text are read too.

    Text comes from pdfminer's layout analysis of each pdfplumber page (text boxes in
    reading order, one blank line between boxes). pdfplumber's own ``extract_text``
    builds a dict per character first and is three times slower, which would miss our
    20 pages/s target on dense pages; its table finder needs those dicts too, so it runs
    only on pages that draw lines or boxes (a ruled table's cells).
    """
    try:
        import pdfplumber
    except ImportError as exc:  # pragma: no cover - the rag extra installs it
        raise LoaderError(source, "pdfplumber is not installed: pip install 'ragate[rag]'") from exc
    if not data:
        raise LoaderError(source, "empty file")
    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise LoaderError(source, "not a PDF file (no %PDF header)")
    documents: list[Document] = []
    page_errors = 0
    scans = Scans(data, options)
    no_ocr: OcrUnavailableError | None = None  # pages that needed it, without the extra
    try:
        with pdfplumber.open(io.BytesIO(data), laparams={}) as pdf:
            pages = pdf.pages
            if not pages:
                raise LoaderError(source, "PDF has no pages")
            for number, page in enumerate(pages, start=1):
                try:
                    text = page_text(page)
                    if not usable(text):
                        text = scans.page(number - 1) or text
                    elif options.ocr == "always":
                        text = "\n\n".join([text, *scans.images(number - 1, page)])
                except OcrUnavailableError as exc:  # keep what the page's text layer has
                    no_ocr = exc
                except MemoryError:
                    raise
                except Exception:  # one broken page must not lose the others
                    page_errors += 1
                    continue
                finally:
                    page.close()
                if text.strip():
                    meta = DocumentMetadata(source, content_hash, number)
                    documents.append(Document(text, meta))
    except LoaderError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise LoaderError(source, _describe(exc)) from exc
    finally:
        scans.close()
    if not documents:
        if no_ocr is not None:
            raise LoaderError(source, f"scanned pages without text: {no_ocr}")
        if page_errors:
            raise LoaderError(source, f"malformed PDF: none of its {page_errors} pages parse")
        if options.ocr == "never":
            raise LoaderError(source, "no extractable text (scanned or image-only PDF, and "
                                      "OCR is off for this knowledge base)")
        raise LoaderError(source, "no text, even with OCR (blank or unreadable pages)")
    return documents


def usable(text: str) -> bool:
    """Whether a page's text layer says something: enough letters, not a font's glyph ids
    (``(cid:123)``) or replacement characters, which is what broken scans carry."""
    letters = sum(ch.isalnum() for ch in text)
    junk = text.count("(cid:") * 8 + text.count("\ufffd")
    return letters >= 16 and junk < letters / 2


class Scans:
    """Pages (and image regions) rendered with pdfium and read with OCR, opened on first
    need: a PDF with a text layer never pays for it."""

    def __init__(self, data: bytes, options: LoadOptions) -> None:
        self.data, self.options = data, options
        self.done = 0
        self._pdf: Any = None

    def _render(self, index: int) -> Any:
        import pypdfium2

        if self._pdf is None:
            self._pdf = pypdfium2.PdfDocument(self.data)
        page = self._pdf[index]
        try:
            width, height = page.get_size()
            return page.render(scale=ocr.scale_for(width, height)).to_pil(), width, height
        finally:
            page.close()

    def page(self, index: int) -> str:
        if self.options.ocr == "never":
            return ""
        image, _, _ = self._render(index)
        return self._read(image)

    def images(self, index: int, page: Any) -> list[str]:
        """The text of each sizeable image on a page (``always``)."""
        regions = [im for im in page.images
                   if (im["x1"] - im["x0"]) * (im["bottom"] - im["top"])
                   > page.width * page.height / 50]
        if not regions:
            return []
        image, width, height = self._render(index)
        sx, sy = image.width / width, image.height / height
        texts = []
        for im in regions:
            box = (max(0, int(im["x0"] * sx)), max(0, int(im["top"] * sy)),
                   min(image.width, int(im["x1"] * sx)), min(image.height, int(im["bottom"] * sy)))
            if box[2] > box[0] and box[3] > box[1]:
                text = ocr.read_image(image.crop(box))
                if text:
                    texts.append(text)
        self._heard()
        return texts

    def _read(self, image: Any) -> str:
        text = ocr.read_image(image)
        self._heard()
        return text

    def _heard(self) -> None:
        self.done += 1
        if self.options.on_ocr_page is not None:
            self.options.on_ocr_page(self.done)

    def close(self) -> None:
        if self._pdf is not None:
            self._pdf.close()
            self._pdf = None


def page_text(page: Any) -> str:
    """A page's text boxes in reading order, each table once, as Markdown, in the place
    of the first text box that falls inside it."""
    from pdfminer.layout import LTCurve, LTTextContainer

    layout = page.layout
    boxes = [obj for obj in layout if isinstance(obj, LTTextContainer)]
    ruled = any(isinstance(obj, LTCurve) for obj in layout)  # LTLine and LTRect are curves
    tables = _tables(page) if ruled else []
    blocks: list[str] = []
    placed: set[int] = set()
    for box in boxes:
        # pdfminer measures up from the bottom, pdfplumber's tables down from the top
        x, top = (box.x0 + box.x1) / 2, page.height - (box.y0 + box.y1) / 2
        inside = next((i for i, (bbox, _) in enumerate(tables)
                       if bbox[0] <= x <= bbox[2] and bbox[1] <= top <= bbox[3]), None)
        if inside is None:
            text = box.get_text().strip()
            if text:
                blocks.append(text)
        elif inside not in placed:
            placed.add(inside)
            blocks.append(tables[inside][1])
    blocks.extend(markdown for i, (_, markdown) in enumerate(tables) if i not in placed)
    return "\n\n".join(blocks)


def _tables(page: Any) -> list[tuple[tuple[float, float, float, float], str]]:
    """(bbox, Markdown) of each ruled table with at least two rows and two columns."""
    found = []
    for table in page.find_tables():
        rows = table.extract()
        if len(rows) < 2 or max(len(row) for row in rows) < 2:
            continue  # a box drawn around a paragraph is not a table
        markdown = render_table(rows)
        if markdown:
            found.append((table.bbox, markdown))
    return found


def _describe(exc: Exception) -> str:
    # pdfplumber wraps pdfminer's errors; the wrapped one names the actual problem.
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], Exception) else exc
    name = type(inner).__name__
    if "Password" in name or "Encrypt" in name:
        return "encrypted PDF (a password is required to open it)"
    if name in {"PSEOF", "PDFSyntaxError", "PSSyntaxError", "PDFNoValidXRef"}:
        return f"malformed or truncated PDF ({name}: {inner})"
    return f"cannot read PDF ({name}: {inner})"
