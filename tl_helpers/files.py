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


def tensor_digest(*arrays: Any) -> str:
    """A sha256 over the dtype, shape and raw bytes of each torch tensor or numpy array."""
    import numpy as np

    digest = hashlib.sha256()
    for a in arrays:
        t = a.detach().cpu().contiguous() if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
        digest.update(f"{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def load_or_build(path: str | os.PathLike, key: str, build: Any, *, what: str = "cache") -> Any:
    """The value cached at ``path`` under ``key``; else ``build()``, saved atomically."""
    import warnings

    target = Path(path)
    if target.is_file():
        try:
            blob = torch.load(target, map_location="cpu", weights_only=True)
            if isinstance(blob, dict) and blob.get("key") == key:
                return blob["value"]
        except Exception as exc:  # noqa: BLE001 - a corrupt file is rebuilt
            warnings.warn(f"The {what} {target} is unreadable ({type(exc).__name__}); rebuilding it.", stacklevel=2)
    value = build()
    try:
        atomic_torch_save({"key": key, "value": value}, target)
    except OSError as exc:
        warnings.warn(f"{exc} Continuing without the {what}.", stacklevel=2)
    return value
