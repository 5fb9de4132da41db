"""Scanned pages for the OCR tests: text rendered to an image with Pillow, saved as an
image-only PDF (no text layer), the way a scanner or a phone would deliver it."""

from __future__ import annotations

import io
from pathlib import Path

FONT = Path(__file__).resolve().parents[2] / "data" / "fonts" / "NotoSansSC-subset.otf"

ENGLISH = ["Forklift keys are kept in locker 38.",
           "The night shift signs them out at 22:00.",
           "",
           "Spare batteries are charged in bay 7."]
CHINESE = ["叉车钥匙存放在三十八号柜子里。",
           "夜班员工在晚上十点签出钥匙。",
           "",
           "备用电池在七号仓充电。"]


def page_image(lines: list[str], *, chinese: bool = False):
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (1654, 2339), 255)  # A4 at 200 dpi
    draw = ImageDraw.Draw(image)
    size = 56 if chinese else 48
    font = ImageFont.truetype(str(FONT), size) if chinese else ImageFont.load_default(size=size)
    for i, line in enumerate(lines):  # lines 1.5 sizes apart, as a document sets them
        draw.text((150, 200 + i * size * 3 // 2), line, fill=0, font=font)
    return image


def png(image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def scanned_pdf(*images) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    for image in images:
        pdf.add_page()
        pdf.image(io.BytesIO(png(image)), x=0, y=0, w=210, h=297)
    return bytes(pdf.output())


def text_pdf_with_image(text: str, image) -> bytes:
    """A page with a text layer and, below it, a picture that holds more text."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 7, text)
    pdf.image(io.BytesIO(png(image.crop((0, 150, 1654, 600)))), x=10, y=80, w=190)
    return bytes(pdf.output())
