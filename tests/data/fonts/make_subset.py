"""How NotoSansSC-subset.otf was made (run by hand, never by the tests): Noto Sans CJK SC
Regular from Debian's fonts-noto-cjk, cut with fontTools to ASCII plus every CJK
character the test suite renders, so Chinese test pages need no font on the machine.

    apt-get install fonts-noto-cjk && pip install fonttools
    python tests/data/fonts/make_subset.py
"""

from __future__ import annotations

import re
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTCollection

SOURCE = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
SC_FACE = 2  # JP, KR, SC, TC, HK: the simplified Chinese face
HERE = Path(__file__).resolve().parent
TESTS = HERE.parents[1]
# CJK ideographs and CJK/full-width punctuation
CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")


def main() -> None:
    used = set()
    for path in TESTS.rglob("*.py"):
        used |= set(CJK.findall(path.read_text(encoding="utf-8")))
    text = "".join(sorted(used)) + "".join(chr(c) for c in range(0x20, 0x7f))
    font = TTCollection(SOURCE).fonts[SC_FACE]
    options = subset.Options()
    options.name_IDs = ["*"]  # keep the copyright and licence names
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=text)
    subsetter.subset(font)
    out = HERE / "NotoSansSC-subset.otf"
    font.save(out)
    print(f"{out}: {len(used)} CJK characters, {out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
