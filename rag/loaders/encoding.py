"""Detect the text encoding of a byte string and decode it (BOMs, UTF-8, GB18030, Big5, UTF-16)."""

from __future__ import annotations

import codecs
import unicodedata

import chardet

# chardet names the Chinese legacy encodings by their smallest member; decode with the
# superset so rare characters (and GBK/GB18030 extensions, HKSCS) do not fail the file.
_SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "gb18030": "gb18030",
    "big5": "big5hkscs",
    "cp950": "big5hkscs",
    "ascii": "utf-8",
}

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class UndetectableEncodingError(ValueError):
    """The bytes do not look like text in any encoding we know."""


def decode_text(data: bytes) -> tuple[str, str]:
    """Decode ``data`` and return ``(text, encoding)``.

    Order: a BOM wins; bytes with NULs are BOM-less UTF-16 or binary (chardet calls
    both binary, and ASCII in UTF-16 is valid UTF-8 with NULs); then strict UTF-8 (the
    common case, where chardet is slow and sometimes wrong); then chardet's candidates,
    decoded strictly. Raises UndetectableEncodingError.
    """
    for bom, name in _BOMS:
        if data.startswith(bom):
            return data.decode(name), name
    if b"\x00" in data:
        utf16 = _guess_utf16(data)
        if utf16 is not None:
            return utf16
        raise UndetectableEncodingError("cannot detect a text encoding (binary file?)")
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    for guess in chardet.detect_all(data):
        detected = guess.get("encoding")
        if not detected:
            continue
        name = _SUPERSETS.get(detected.lower(), detected.lower())
        try:
            return data.decode(name), name
        except (UnicodeDecodeError, LookupError):
            continue
    utf16 = _guess_utf16(data)  # Chinese UTF-16 may hold no NUL byte at all
    if utf16 is not None:
        return utf16
    raise UndetectableEncodingError("cannot detect a text encoding (binary file?)")


def _guess_utf16(data: bytes) -> tuple[str, str] | None:
    """BOM-less UTF-16: accept the byte order whose decoding looks like real text."""
    if len(data) % 2:
        return None
    best: tuple[float, str, str] | None = None
    for name in ("utf-16-le", "utf-16-be"):
        try:
            text = data.decode(name)
        except UnicodeDecodeError:
            continue
        share = _plausible_share(text)
        if share >= 0.9 and (best is None or share > best[0]):
            best = (share, text, name)
    return (best[1], best[2]) if best else None


def _plausible_share(text: str) -> float:
    """Share of characters that ordinary prose uses; random bytes score far lower."""
    if not text:
        return 0.0
    ok = 0
    for ch in text:
        cp = ord(ch)
        if (
            ch in "\n\r\t"
            or 0x20 <= cp < 0x7F
            or 0x4E00 <= cp <= 0x9FFF  # CJK unified ideographs
            or 0x3000 <= cp <= 0x303F  # CJK punctuation
            or 0xFF00 <= cp <= 0xFFEF  # full-width forms
            or 0x2000 <= cp <= 0x206F  # general punctuation
            or (0xA0 <= cp <= 0x24F and unicodedata.category(ch)[0] in "LPZ")
        ):
            ok += 1
    return ok / len(text)
