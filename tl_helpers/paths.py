"""Where the course keeps data, caches and checkpoints.

Everything is configurable through environment variables, read when a
function is called (never at import time):

- ``TL_DATA_DIR``: the data folder (default: ``<repo>/data`` when running from a
  checkout, else ``~/.cache/tl-course``). EuroSAT is unpacked into
  ``<data dir>/eurosat/2750/<Class>/...``.
- ``TL_CACHE_DIR``: pre-decoded tensors and cached features
  (default: ``<data dir>/cache``).
- ``TL_EUROSAT_ARCHIVE``: a local ``EuroSAT_RGB.zip`` / ``EuroSAT.zip`` to use.
- ``TL_ALLOW_DOWNLOAD``: ``1`` lets the course download data or weights when
  they are not found locally. Default: never download.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "ALLOW_DOWNLOAD_ENV",
    "ARCHIVE_ENV",
    "CACHE_DIR_ENV",
    "DATA_DIR_ENV",
    "REPO_ROOT",
    "cache_dir",
    "data_dir",
    "downloads_allowed",
]

DATA_DIR_ENV = "TL_DATA_DIR"
CACHE_DIR_ENV = "TL_CACHE_DIR"
ARCHIVE_ENV = "TL_EUROSAT_ARCHIVE"
ALLOW_DOWNLOAD_ENV = "TL_ALLOW_DOWNLOAD"

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """The course's data folder (argument, else ``$TL_DATA_DIR``, else the default)."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / "data"
    return Path.home() / ".cache" / "tl-course"


def cache_dir(data_dir_override: str | os.PathLike | None = None) -> Path:
    """Folder for the tensor and feature caches (``$TL_CACHE_DIR`` or ``<data dir>/cache``)."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return data_dir(data_dir_override) / "cache"


def downloads_allowed(allow: bool | None = None) -> bool:
    """Whether a download may be attempted (argument, else ``$TL_ALLOW_DOWNLOAD``)."""
    if allow is not None:
        return allow
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}
