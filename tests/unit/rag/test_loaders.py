"""Loaders on real files generated here: PDFs (English, Chinese, scanned, encrypted,
truncated), text in legacy encodings, Markdown and Word."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fpdf import FPDF

from rag.errors import LoaderError
from rag.loaders import LoadOptions, content_hash, load_bytes, load_file, load_files
from rag.loaders.encoding import decode_text

ZH_SIMPLIFIED = "北京是中华人民共和国的首都，也是全国的政治、文化中心。长城是世界闻名的古迹！"
ZH_TRADITIONAL = "臺北是臺灣最大的城市。這裡有許多美麗的風景，歡迎大家來旅遊！"


def english_pdf(pages: int = 3, *, header: str | None = None) -> bytes:
    pdf = FPDF()
    for n in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font("helvetica", size=11)
        if header:
            pdf.cell(0, 8, header)
            pdf.ln(12)
        pdf.multi_cell(0, 6, f"Page {n} body. The quick brown fox jumps over the lazy dog. " * 6)
    return bytes(pdf.output())


def chinese_pdf(font: Path) -> bytes:
    pdf = FPDF()
    pdf.add_font("cjk", fname=str(font))
    for text in (ZH_SIMPLIFIED, ZH_TRADITIONAL):
        pdf.add_page()
        pdf.set_font("cjk", size=14)
        pdf.multi_cell(0, 10, text * 3)
    return bytes(pdf.output())


# -- PDF --------------------------------------------------------------------------------

def test_pdf_pages_keep_their_numbers_and_share_the_file_hash():
    data = english_pdf(3)
    docs = load_bytes(data, "report.pdf")
    assert [d.page for d in docs] == [1, 2, 3]
    assert all(d.source == "report.pdf" for d in docs)
    assert {d.metadata.content_hash for d in docs} == {content_hash(data)}
    assert "Page 2 body" in docs[1].text and "lazy dog" in docs[1].text


def test_chinese_pdf_with_embedded_cjk_font(cjk_font: Path):
    docs = load_bytes(chinese_pdf(cjk_font), "中文.pdf")
    assert [d.page for d in docs] == [1, 2]
    flat = ["".join(d.text.split()) for d in docs]
    assert "北京是中华人民共和国的首都" in flat[0]
    assert "臺北是臺灣最大的城市" in flat[1]


def test_scanned_pdf_without_ocr_fails_with_reason(tmp_path: Path):
    from PIL import Image

    image = tmp_path / "scan.png"
    Image.new("RGB", (200, 100), "white").save(image)
    pdf = FPDF()
    pdf.add_page()
    pdf.image(str(image), x=10, y=10, w=100)
    pdf.add_page()  # and an empty page
    with pytest.raises(LoaderError, match="no extractable text.*OCR is off") as info:
        load_bytes(bytes(pdf.output()), "scan.pdf", LoadOptions(ocr="never"))
    assert info.value.source == "scan.pdf"


def test_encrypted_pdf_fails_with_reason():
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="top secret")
    pdf.set_encryption(owner_password="owner", user_password="user")
    with pytest.raises(LoaderError, match="encrypted"):
        load_bytes(bytes(pdf.output()), "secret.pdf")


def test_pdf_with_owner_password_only_is_readable():
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.cell(text="readable by anyone")
    pdf.set_encryption(owner_password="owner")
    docs = load_bytes(bytes(pdf.output()), "open.pdf")
    assert "readable by anyone" in docs[0].text


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.8])
def test_truncated_pdf_fails_with_reason(keep: float):
    data = english_pdf(4)
    with pytest.raises(LoaderError, match="truncated|malformed|cannot read"):
        load_bytes(data[: int(len(data) * keep)], "cut.pdf")


def test_not_a_pdf_and_empty_pdf():
    with pytest.raises(LoaderError, match="not a PDF"):
        load_bytes(b"hello, not a pdf", "fake.pdf")
    with pytest.raises(LoaderError, match="empty file"):
        load_bytes(b"", "empty.pdf")


# -- text encodings ---------------------------------------------------------------------

@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("gbk", ZH_SIMPLIFIED * 4),
        ("gb18030", ZH_SIMPLIFIED * 4),
        ("big5", ZH_TRADITIONAL * 4),
        ("utf-16", ZH_SIMPLIFIED * 4),  # with BOM
        ("utf-16-le", ZH_SIMPLIFIED * 4),  # without BOM
        ("utf-16-be", "Plain English text in UTF-16, big endian, no BOM.\n" * 4),
        ("utf-8-sig", ZH_SIMPLIFIED * 4),
        ("utf-8", ZH_TRADITIONAL * 4),
    ],
)
def test_txt_encodings_are_detected(tmp_path: Path, encoding: str, text: str):
    path = tmp_path / f"{encoding}.txt"
    path.write_bytes(text.encode(encoding))
    docs = load_file(path)
    assert len(docs) == 1
    assert docs[0].text == text
    assert docs[0].page is None
    assert "\ufeff" not in docs[0].text


def test_short_gbk_and_big5_lines_decode():
    assert decode_text("中文测试。".encode("gbk"))[0] == "中文测试。"
    assert decode_text("中文測試。".encode("big5"))[0] == "中文測試。"


def test_binary_and_empty_txt_fail_alone(tmp_path: Path):
    import random

    rng = random.Random(7)
    (tmp_path / "a.txt").write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
    (tmp_path / "b.txt").write_bytes(b"")
    (tmp_path / "c.txt").write_text("   \n\n  ")
    (tmp_path / "d.txt").write_text("fine")
    results = {r.source: r for r in load_files(sorted(tmp_path.iterdir()))}
    assert "binary" in results["a.txt"].error
    assert results["b.txt"].error == "empty file"
    assert results["c.txt"].error == "file contains no text"
    assert results["d.txt"].ok and results["d.txt"].documents[0].text == "fine"


def test_unsupported_and_missing_files_fail_alone(tmp_path: Path):
    (tmp_path / "x.exe").write_bytes(b"MZ")
    results = list(load_files([tmp_path / "x.exe", tmp_path / "missing.txt"]))
    assert "unsupported file type" in results[0].error
    assert "cannot open file" in results[1].error


# -- markdown and docx ------------------------------------------------------------------

def test_markdown_markup_is_stripped():
    md = (
        "---\ntitle: x\n---\n# 标题\nSome **bold** text with a [link](http://x.y) and "
        "![alt](img.png).\n\n```python\nprint('code')\n```\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    text = load_bytes(md.encode("utf-8"), "readme.md")[0].text
    assert "标题" in text and "bold" in text and "**" not in text
    assert "link" in text and "http://x.y" not in text
    assert "title: x" not in text and "print('code')" in text and "1 2" in text


def test_docx_paragraphs_and_tables_in_order():
    import docx

    document = docx.Document()
    document.add_heading("项目报告", level=1)
    document.add_paragraph("第一段：北京是首都。")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "城市"
    table.rows[0].cells[1].text = "上海"
    document.add_paragraph("Last paragraph.")
    buffer = io.BytesIO()
    document.save(buffer)
    text = load_bytes(buffer.getvalue(), "report.docx")[0].text
    assert text.index("项目报告") < text.index("第一段") < text.index("城市 | 上海")
    assert text.index("城市 | 上海") < text.index("Last paragraph.")


def test_malformed_docx_fails_with_reason():
    with pytest.raises(LoaderError, match="not a valid .docx"):
        load_bytes(b"\xd0\xcf\x11\xe0 ole container", "locked.docx")
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("hello.txt", "not a word document")
    with pytest.raises(LoaderError, match="malformed .docx"):
        load_bytes(buffer.getvalue(), "broken.docx")
