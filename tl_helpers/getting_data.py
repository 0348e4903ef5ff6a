"""What to do when EuroSAT is not on this machine: one message, shared by ``load_eurosat()``,
``find_eurosat()`` and ``python -m tl_helpers doctor`` (which ``make lab`` runs first).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from tl_helpers.paths import ALLOW_DOWNLOAD_ENV, ARCHIVE_ENV, data_dir

__all__ = ["DOWNLOAD_SIZE", "download_plan", "eurosat_missing_message"]

# Size of the file behind ``data.DOWNLOAD_URL`` (torchvision's EuroSAT.zip, RGB only).
DOWNLOAD_SIZE = "about 90 MB"


def download_plan(data_dir_: str | os.PathLike | None, url: str, md5: str) -> dict[str, str]:
    """Where a permitted download comes from, where it goes and how it is checked."""
    base = data_dir(data_dir_)
    return {
        "url": url,
        "size": DOWNLOAD_SIZE,
        "target": str(base / "eurosat" / "EuroSAT.zip"),
        "unpacked": str(base / "eurosat" / "2750"),
        "md5": md5,
    }


def eurosat_missing_message(
    data_dir_: str | os.PathLike | None, looked: Iterable[str | os.PathLike], *, url: str, md5: str
) -> str:
    """The not-found message: the two ways to continue, with the exact paths, size and checksum.

    ``url`` and ``md5``: the download ``find_eurosat()`` would make (``data.DOWNLOAD_URL``, ``data.KNOWN_MD5``).
    """
    plan = download_plan(data_dir_, url, md5)
    looked = [str(p) for p in looked]
    lines = ["EuroSAT RGB was not found."]
    if looked:
        lines += ["Looked at:"] + [f"  {p}" for p in looked]
    lines += [
        "Two ways to continue:",
        f"  1. With internet: set {ALLOW_DOWNLOAD_ENV}=1 and run again "
        f"(shell: export {ALLOW_DOWNLOAD_ENV}=1; notebook, before loading the data: "
        f'import os; os.environ["{ALLOW_DOWNLOAD_ENV}"] = "1").',
        f"     It downloads EuroSAT.zip ({plan['size']}) from {plan['url']}",
        f"     to {plan['target']}, verifies its md5 checksum {plan['md5']},",
        f"     and unpacks it into {plan['unpacked']}.",
        f"  2. With a copy of the archive: put EuroSAT_RGB.zip (or EuroSAT.zip) at "
        f"{Path(data_dir(data_dir_)) / 'EuroSAT_RGB.zip'},",
        f"     or set {ARCHIVE_ENV}=/path/to/EuroSAT_RGB.zip.",
    ]
    return "\n".join(lines)
