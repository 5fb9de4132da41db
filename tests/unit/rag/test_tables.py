"""Tables from PDFs, Word, sheets and CSV as Markdown; the splitter cuts between rows and
repeats the header; a cell value finds its chunk, header included."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from fpdf import FPDF

from rag.cleaning import clean_pages
from rag.documents import Document, DocumentMetadata
from rag.errors import LoaderError
from rag.ingest import ingest_files
from rag.loaders import load_bytes
from rag.loaders.tables import render_table, table_spans
from rag.splitting import TextSplitter, merge_overlapping

PARTS = [("Part", "Code", "Price")] + [(f"Part number {i}", f"PN-{i:03d}", f"{i * 3}.50")
                                        for i in range(1, 41)]


def table_pdf(rows=PARTS) -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=10)
    pdf.multi_cell(0, 6, "Spare parts and their prices in euros are listed below.")
    pdf.ln(3)
    with pdf.table() as table:
        for values in rows:
            row = table.row()
            for value in values:
                row.cell(value)
    pdf.ln(3)
    pdf.multi_cell(0, 6, "Delivery takes two weeks from the order date.")
    return bytes(pdf.output())


def test_render_table_escapes_and_drops_empty_columns():
    markdown = render_table([["Name", None, "Note"], ["a|b", "", "two\nlines"], [None, None]])
    assert markdown.split("\n") == ["| Name | Note |", "| --- | --- |", "| a\\|b | two lines |"]
    assert render_table([[None, ""]]) == ""
    assert table_spans("intro\n\n" + markdown + "\n\nafter") == [
        (7, 7 + len(markdown), "| Name | Note |\n| --- | --- |\n")]


def test_pdf_table_comes_out_as_markdown_in_reading_order():
    [page] = load_bytes(table_pdf(PARTS[:4]), "parts.pdf")
    blocks = page.text.split("\n\n")
    assert blocks[0].startswith("Spare parts")
    assert blocks[1].split("\n")[:3] == ["| Part | Code | Price |", "| --- | --- | --- |",
                                         "| Part number 1 | PN-001 | 3.50 |"]
    assert blocks[-1].startswith("Delivery takes")
    assert page.text.count("PN-002") == 1  # the cells are not repeated as loose text


def test_cleaning_keeps_rows_apart():
    text = "| Part | Code |\n| --- | --- |\n| Brake | B-1 |\n| Chain | C-2 |"
    assert clean_pages([text]) == [text]


def test_split_table_never_cuts_a_row_and_repeats_the_header():
    [page] = clean_pages([load_bytes(table_pdf(), "parts.pdf")[0].text])
    document = Document(page, DocumentMetadata("parts.pdf", "h", 1))
    chunks = TextSplitter(200, 40).split_documents([document], "doc")
    in_table = [c for c in chunks if "PN-" in c.text]
    assert len(in_table) >= 5
    header = "| Part | Code | Price |\n| --- | --- | --- |\n"
    for chunk in in_table:
        rows = [line for line in chunk.text.split("\n") if line.startswith("| Part number")]
        assert rows and all(line.endswith(" |") and line.count("|") == 4 for line in rows)
        assert header in chunk.text or chunk.text.startswith("Spare parts")
        # the span covers exactly the rows the page holds; the header is the rest
        body = page[chunk.metadata.start:chunk.metadata.end]
        assert chunk.text.endswith(body) and len(chunk.text) - len(body) in (0, len(header))
    merged = merge_overlapping([c.text for c in chunks],
                               [(c.metadata.page, c.metadata.start, c.metadata.end)
                                for c in chunks])
    assert merged == page  # the repeated headers and the overlaps are not doubled


def test_a_cell_value_finds_its_chunk_with_the_header(kb, tmp_path: Path):
    path = tmp_path / "parts.pdf"
    path.write_bytes(table_pdf())
    assert ingest_files(kb, [path]).added == ("parts.pdf",)
    hits = kb.search("PN-037", mode="lexical", top_k=1)
    assert hits and "| Part number 37 | PN-037 | 111.50 |" in hits[0].text
    assert "| Part | Code | Price |" in hits[0].text
    assert "| Part number 36 | PN-036 | 108.50 |\n| Part number 37" in hits[0].text


def docx_with_table() -> bytes:
    import docx

    document = docx.Document()
    document.add_paragraph("城市人口表如下。")
    table = document.add_table(rows=3, cols=3)
    for r, values in enumerate([("城市", "人口", "面积"), ("上海", "2487", "6340"),
                                ("合计", "", "")]):
        for c, value in enumerate(values):
            table.cell(r, c).text = value
    table.cell(2, 1).merge(table.cell(2, 2)).text = "见附录"
    document.add_paragraph("数据来自统计年鉴。")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_docx_table_as_markdown_with_merged_cells_once():
    [document] = load_bytes(docx_with_table(), "人口.docx")
    blocks = document.text.split("\n\n")
    assert blocks[0] == "城市人口表如下。" and blocks[-1] == "数据来自统计年鉴。"
    assert blocks[1].split("\n") == ["| 城市 | 人口 | 面积 |", "| --- | --- | --- |",
                                     "| 上海 | 2487 | 6340 |", "| 合计 | 见附录 | |"]


def test_xlsx_one_table_per_sheet():
    import openpyxl

    book = openpyxl.Workbook()
    book.active.title = "库存"
    book.active.append(["物品", "数量"])
    book.active.append(["叉车钥匙", 38])
    book.active.append(["总计", "=B2*2"])
    prices = book.create_sheet("Prices")
    prices.append(["Item", "EUR"])
    prices.append(["Mast chain", 310.0])
    book.create_sheet("Empty")
    out = io.BytesIO()
    book.save(out)
    documents = load_bytes(out.getvalue(), "stock.xlsx")
    assert [(d.page, d.metadata.extra["sheet"]) for d in documents] == [(1, "库存"), (2, "Prices")]
    assert documents[0].text.split("\n") == ["库存", "", "| 物品 | 数量 |", "| --- | --- |",
                                            "| 叉车钥匙 | 38 |", "| 总计 | |"]
    assert "| Mast chain | 310 |" in documents[1].text


def test_csv_sniffs_the_delimiter_and_the_encoding():
    data = "名称;价格\n刹车片;41,50\n链条;310\n".encode("gbk")
    [document] = load_bytes(data, "价格.csv")
    assert document.text.split("\n") == ["| 名称 | 价格 |", "| --- | --- |", "| 刹车片 | 41,50 |",
                                        "| 链条 | 310 |"]
    assert document.metadata.extra["encoding"] == "gb18030"
    with pytest.raises(LoaderError, match="empty file"):
        load_bytes(b"", "none.csv")


def bomb(name: str, member: str, size: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open(member, "w", force_zip64=True) as stream:
            block = b"\0" * (1 << 20)
            for _ in range(size >> 20):
                stream.write(block)
    return out.getvalue()


@pytest.mark.parametrize(("name", "member"), [("bomb.docx", "word/document.xml"),
                                              ("bomb.xlsx", "xl/worksheets/sheet1.xml")])
def test_zip_bombs_are_refused_from_the_directory(name, member):
    data = bomb(name, member, 300 << 20)
    assert len(data) < 1 << 20
    with pytest.raises(LoaderError, match="zip bomb") as info:
        load_bytes(data, name)
    assert "300 MiB" in info.value.reason
