"""Zip containers (.docx, .xlsx) checked before a parser opens them: a zip bomb is refused
from its directory, before anything is inflated.

Python's zipfile stops each member at the size its directory entry declares, so the
declared sizes bound what the parsers can inflate; refusing on them is exact.
"""

from __future__ import annotations

import io
import zipfile

from rag.errors import LoaderError

MiB = 1024 * 1024
# Office XML inflates 5-10x; 20x the file, and never less than 16 MiB for small files,
# leaves real documents room and stops a 2 MB bomb that would inflate to 2 GiB.
EXPANSION_RATIO = 20
EXPANSION_FLOOR = 16 * MiB
EXPANSION_CAP = 512 * MiB
MAX_MEMBERS = 10_000


def archive_bound(size: int) -> int:
    """How many bytes a container of ``size`` bytes may inflate to."""
    return min(max(EXPANSION_RATIO * size, EXPANSION_FLOOR), EXPANSION_CAP)


def check_archive(data: bytes, source: str) -> None:
    """Raise LoaderError when the archive's members would inflate beyond the bound."""
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise LoaderError(source, f"corrupt zip container ({exc})") from exc
    if len(members) > MAX_MEMBERS:
        raise LoaderError(source, f"archive has {len(members)} members "
                                  f"(at most {MAX_MEMBERS}): refused as a zip bomb")
    inflated = sum(member.file_size for member in members)
    bound = archive_bound(len(data))
    if inflated > bound:
        raise LoaderError(
            source, f"archive would expand to {inflated / MiB:.0f} MiB from "
                    f"{len(data) / MiB:.1f} MiB (more than {bound / MiB:.0f} MiB allowed): "
                    "refused as a zip bomb")
