"""Helpers shared by the tests: tiny fake EuroSAT folders and archives, the real archive.

Tests import these from here (``from tests.helpers import make_fake_eurosat``); the
fixtures built on them live in ``tests/conftest.py``, which pytest loads by itself.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from tl_helpers.archive import EUROSAT_CLASSES

__all__ = ["REPO", "SHARED_ARCHIVE", "NetworkBlocked", "make_fake_eurosat", "real_archive", "zip_folder"]

REPO = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = REPO.parent / "shared" / "data" / "eurosat" / "EuroSAT_RGB.zip"


class NetworkBlocked(RuntimeError):
    """Raised by the ``no_network`` fixture on any attempt to open a connection."""


def make_fake_eurosat(root: Path, per_class: int = 12, size: int = 64, seed: int = 0) -> Path:
    """Write ``root/<Class>/<Class>_<n>.jpg`` with class-dependent colours (learnable, tiny)."""
    rng = np.random.default_rng(seed)
    for label, cls in enumerate(EUROSAT_CLASSES):
        (root / cls).mkdir(parents=True, exist_ok=True)
        base = np.array([(label * 25) % 255, (label * 70) % 255, (255 - label * 25) % 255], dtype=np.float32)
        for n in range(1, per_class + 1):
            noise = rng.normal(0, 20, size=(size, size, 3))
            array = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(array).save(root / cls / f"{cls}_{n}.jpg", quality=90)
    return root


def zip_folder(folder: Path, archive: Path, prefix: str = "2750/") -> Path:
    """Zip every file under ``folder`` into ``archive``, under ``prefix``."""
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, prefix + str(f.relative_to(folder)))
    return archive


def real_archive() -> Path | None:
    """The real EuroSAT archive (``$TL_EUROSAT_ARCHIVE``, else the shared copy), or ``None``."""
    env = os.environ.get("TL_EUROSAT_ARCHIVE")
    for candidate in ([Path(env)] if env else []) + [SHARED_ARCHIVE]:
        if candidate.is_file():
            return candidate
    return None
