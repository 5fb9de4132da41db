"""OCR of scanned pages and images (RapidOCR, models inside its wheel): English and
Chinese pages found by search, the three modes, progress per page, hostile images."""

from __future__ import annotations

import pytest

from rag.errors import LoaderError
from rag.ingest import IngestJob, JobStatus
from rag.loaders import LoadOptions, load_bytes
from rag.ocr import in_reading_order
from tests.unit.rag.ocr_pages import (
    CHINESE,
    ENGLISH,
    page_image,
    png,
    scanned_pdf,
    text_pdf_with_image,
)

pytest.importorskip("rapidocr_onnxruntime", reason="the ocr extra is installed by make install")


def squeeze(text: str) -> str:
    return "".join(text.split())


def test_reading_order_groups_lines_and_paragraphs():
    box = lambda x, y: [[x, y], [x + 100, y], [x + 100, y + 30], [x, y + 30]]  # noqa: E731
    result = [[box(200, 11), "world", 0.9], [box(10, 10), "hello", 0.9],
              [box(10, 50), "next", 0.9], [box(10, 130), "新段落", 0.9],
              [box(120, 131), "继续", 0.9]]
    assert in_reading_order(result) == "hello world\nnext\n\n新段落继续"


def test_scanned_english_page_is_read_line_by_line():
    pages = []
    [document] = load_bytes(scanned_pdf(page_image(ENGLISH)), "scan.pdf",
                            LoadOptions(on_ocr_page=pages.append))
    assert document.page == 1 and pages == [1]
    assert document.text.split("\n\n")[0].split("\n") == ENGLISH[:2]
    assert "bay 7" in document.text


def test_scanned_chinese_page_and_an_image_file():
    [document] = load_bytes(scanned_pdf(page_image(CHINESE, chinese=True)), "扫描.pdf")
    text = squeeze(document.text)
    assert "叉车钥匙存放在三十八号柜子里" in text and "备用电池在七号仓充电" in text
    [image] = load_bytes(png(page_image(ENGLISH)), "photo.png")
    assert "locker 38" in image.text


def test_modes_never_and_always():
    scan = scanned_pdf(page_image(ENGLISH))
    with pytest.raises(LoaderError, match="OCR is off"):
        load_bytes(scan, "scan.pdf", LoadOptions(ocr="never"))
    with pytest.raises(LoaderError, match="OCR is off"):
        load_bytes(png(page_image(ENGLISH)), "photo.png", LoadOptions(ocr="never"))
    mixed = text_pdf_with_image("The text layer of this page names the loading dock. " * 3,
                                page_image(ENGLISH))
    [auto] = load_bytes(mixed, "mixed.pdf")
    assert "loading dock" in auto.text and "locker" not in auto.text  # images left alone
    [always] = load_bytes(mixed, "mixed.pdf", LoadOptions(ocr="always"))
    assert "loading dock" in always.text and "locker 38" in always.text


def test_blank_scans_and_image_bombs_fail_with_reasons():
    from PIL import Image

    with pytest.raises(LoaderError, match="no text, even with OCR"):
        load_bytes(scanned_pdf(Image.new("L", (800, 1100), 255)), "blank.pdf")
    with pytest.raises(LoaderError, match="not a readable image"):
        load_bytes(b"\x89PNG\r\n\x1a\n broken", "broken.png")
    huge = Image.new("1", (12000, 12000), 1)  # 144 Mpx, a few KB as PNG
    with pytest.raises(LoaderError, match="decompression bomb"):
        load_bytes(png(huge), "huge.png")


def test_scans_are_searchable_after_ingestion_with_ocr_progress(kb, tmp_path):
    scan = tmp_path / "contract.pdf"
    scan.write_bytes(scanned_pdf(page_image(ENGLISH), page_image(CHINESE, chinese=True)))
    seen = []
    final = IngestJob(kb.name, [scan]).run(kb, seen.append)
    assert final.status == JobStatus.DONE and final.pages_done == 2
    assert {f.pages for p in seen for f in p.files if f.stage == "ocr"} == {1, 2}
    [hit] = kb.search("locker 38", mode="lexical", top_k=1)
    assert hit.source == "contract.pdf" and hit.page == 1
    [hit] = kb.search("备用电池", mode="lexical", top_k=1)
    assert hit.page == 2


def test_without_the_ocr_extra_text_pages_are_kept(monkeypatch):
    from rag import ocr

    def missing(image):
        raise ocr.OcrUnavailableError(ocr.INSTALL_HINT)

    monkeypatch.setattr(ocr, "read_image", missing)
    import io

    from fpdf import FPDF

    pdf = FPDF()  # a text page, then a scanned one
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 7, "The first page has text about forklift maintenance. " * 3)
    pdf.add_page()
    pdf.image(io.BytesIO(png(page_image(ENGLISH))), x=0, y=0, w=210, h=297)
    [kept] = load_bytes(bytes(pdf.output()), "half-scanned.pdf")
    assert kept.page == 1 and "forklift maintenance" in kept.text
    with pytest.raises(LoaderError, match="ragate\\[ocr\\]"):
        load_bytes(scanned_pdf(page_image(ENGLISH)), "scan.pdf")
