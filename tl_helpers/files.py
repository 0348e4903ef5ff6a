"""Small file utilities: hashing, atomic writes (temp file, then rename) and one on-disk cache helper.

:func:`load_or_build` is the single cache policy of the course (the tensor cache, the
feature cache, text embeddings): a cache entry is used only when its key matches, a
stale or corrupt entry is rebuilt, and a cache that cannot be written is skipped
with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "CacheWriteError",
    "atomic_path",
    "atomic_torch_save",
    "load_or_build",
    "sha256_file",
    "sha256_text",
    "tensor_digest",
]

T = TypeVar("T")


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


def tensor_digest(*arrays: torch.Tensor | np.ndarray) -> str:
    """A sha256 over the dtype, shape and raw bytes of each tensor or array.

    Tensors are read through a contiguous CPU copy, so the digest depends on the
    values only (not on the device or memory layout); a torch tensor and a NumPy
    array holding the same values with the same dtype give the same digest.
    Hashing the 5,000 EuroSAT training images (61 MB of uint8) takes a fraction of
    a second.

    Args:
        *arrays: torch tensors or NumPy arrays (not object arrays).

    Returns:
        The hex digest.

    Raises:
        TypeError: an argument is neither a tensor nor a NumPy array, or holds Python objects.
    """
    digest = hashlib.sha256()
    digest.update(f"tensor_digest:{len(arrays)}".encode())
    for array in arrays:
        if isinstance(array, torch.Tensor):
            t = array.detach().cpu().contiguous()
            dtype = str(t.dtype).removeprefix("torch.")
            shape = tuple(t.shape)
            raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else np.empty(0, np.uint8)
        elif isinstance(array, np.ndarray):
            if array.dtype.hasobject:
                raise TypeError("tensor_digest cannot hash an object array")
            a = np.ascontiguousarray(array)
            dtype, shape = str(a.dtype), a.shape
            raw = a.reshape(-1).view(np.uint8)
        else:
            raise TypeError(f"tensor_digest takes torch tensors or NumPy arrays, got {type(array).__name__}")
        digest.update(f"\0{dtype}:{shape}:{raw.nbytes}\0".encode())
        digest.update(memoryview(raw))
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


def load_or_build(path: str | os.PathLike, key: str, build: Callable[[], T], *, what: str = "cache") -> T:
    """The value cached at ``path`` under ``key``, else ``build()`` (then cached).

    ``path`` holds ``{"key": key, "value": value}`` written by ``torch.save``; the value
    must load with ``weights_only=True`` (tensors, numbers, strings, lists, tuples, dicts).

    - same key: the cached value is returned and ``build`` is not called;
    - missing file, or a file with another key (stale): ``build()`` is called;
    - unreadable file (corrupt, truncated, not a torch file): a warning, then ``build()``;
    - after building, the value is saved atomically; when that fails
      (:class:`CacheWriteError`: read-only folder, full disk) a warning names the
      fix and the value is returned all the same.

    Args:
        path: The cache file.
        key: What the value depends on (e.g. a :func:`sha256_text` over the inputs and settings).
        build: Computes the value on a miss.
        what: Names the cache in warnings ("tensor cache", "feature cache", ...).

    Returns:
        The cached or freshly built value.
    """
    path = Path(path)
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt, truncated or foreign file
            warnings.warn(f"The {what} {path} is unreadable ({type(exc).__name__}); rebuilding it.", stacklevel=2)
        else:
            if isinstance(blob, dict) and blob.get("key") == key and "value" in blob:
                return blob["value"]
    value = build()
    try:
        atomic_torch_save({"key": key, "value": value}, path)
    except CacheWriteError as exc:
        warnings.warn(f"{exc} Continuing without the {what}.", stacklevel=2)
    return value
