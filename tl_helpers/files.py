"""Small file utilities: hashing and atomic writes (write to a temp file, then rename)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch


class CacheWriteError(OSError):
    """A cache or checkpoint could not be written (disk full, read-only folder...)."""


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(*parts: object) -> str:
    """A stable sha256 over the ``str()`` of each part."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only on success.

    On any error the temp file is removed, so a reader never sees a half-written
    file. Disk-full and permission errors are re-raised as :class:`CacheWriteError`
    naming the target and the fix.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise _write_error(target, exc) from exc
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_error(target, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_error(target: Path, exc: OSError) -> CacheWriteError:
    if exc.errno == errno.ENOSPC:
        fix = "free some disk space or point TL_CACHE_DIR / TL_DATA_DIR at a disk with room"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "the folder is not writable: set TL_DATA_DIR / TL_CACHE_DIR to a writable folder"
    else:
        fix = "check the folder exists and is writable"
    return CacheWriteError(exc.errno or 0, f"Could not write {target}: {exc.strerror or exc}. Fix: {fix}.")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a partial file behind."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)
