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

__all__ = [
    "REAL_DATA",
    "REPO",
    "SHARED_ARCHIVE",
    "SHARED_SST2",
    "SST2_DIR_ENV",
    "SST2_FILES",
    "NetworkBlocked",
    "cuda_available",
    "load_root_conftest",
    "nbval_project",
    "make_fake_eurosat",
    "missing_real_data",
    "real_archive",
    "real_sst2_dir",
    "zip_folder",
]

REPO = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = REPO.parent / "shared" / "data" / "eurosat" / "EuroSAT_RGB.zip"
SHARED_SST2 = REPO.parent / "shared" / "data" / "sst2"
REAL_DATA = ("eurosat", "sst2")  # what ``@pytest.mark.real_data(...)`` can ask for
# tl_helpers.text's SST2_DIR_ENV and SST2_FILES, without importing torch (tests/test_markers.py compares them)
SST2_DIR_ENV = "TL_SST2_DIR"
SST2_FILES = ("train.tsv", "dev.tsv", "test.tsv")


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


def real_sst2_dir() -> Path | None:
    """The real SST-2 folder (``$TL_SST2_DIR``, else the shared copy) when it holds all three files, or ``None``."""
    env = os.environ.get(SST2_DIR_ENV)
    for candidate in ([Path(env)] if env else []) + [SHARED_SST2]:
        if all((candidate / name).is_file() for name in SST2_FILES):
            return candidate
    return None


def missing_real_data(kind: str) -> str | None:
    """Why the real data set ``kind`` (one of :data:`REAL_DATA`) is not available, or ``None`` when it is.

    Raises:
        ValueError: ``kind`` is not one of :data:`REAL_DATA`.
    """
    if kind == "eurosat":
        if real_archive() is None:
            return f"real EuroSAT archive not found (set TL_EUROSAT_ARCHIVE or provide {SHARED_ARCHIVE})"
        return None
    if kind == "sst2":
        if real_sst2_dir() is None:
            files = ", ".join(SST2_FILES)
            return f"SST-2 not found (set {SST2_DIR_ENV} to the folder of {files} or provide {SHARED_SST2})"
        return None
    raise ValueError(f"unknown real data set {kind!r}: use one of {', '.join(REAL_DATA)}")


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU (imports torch only when asked)."""
    import torch

    return torch.cuda.is_available()


def load_root_conftest(name: str = "root_conftest_copy"):
    """The repository's root ``conftest.py`` as a fresh module, to call its hooks directly."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nbval_project(folder: Path) -> Path:
    """A copy of the root ``conftest.py`` (and the site helper it writes executed copies with) in ``folder``, with an
    empty ``notebooks/``: a pytest run there tests the conftest's hooks on notebooks the test writes."""
    import shutil

    shutil.copy(REPO / "conftest.py", folder / "conftest.py")
    (folder / "docs" / "site").mkdir(parents=True)
    shutil.copy(REPO / "docs" / "site" / "executed.py", folder / "docs" / "site" / "executed.py")
    (folder / "notebooks").mkdir()
    return folder / "notebooks"
