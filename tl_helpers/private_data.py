"""The instructor's private data: grade the outcome exercises on images and digits the learners never had.

The built-in private splits (EuroSAT images outside the quick-check split, the scikit-learn digits that
:func:`tl_helpers.data.load_digits_public` leaves out) keep honest learners from tuning on the data they
are graded on by accident, but every learner has them on disk. ``python -m tl_helpers grade
--private-data PATH`` grades on the instructor's data instead. ``PATH`` is either

- a folder: ``PATH/eurosat/<Class>/*.jpg`` (class folders named like EuroSAT's, 64 x 64 RGB images, any
  number per class; other sizes are converted) and/or ``PATH/digits.npz`` (``X``: ``N x 8 x 8`` floats in
  [0, 1], dark background, like ``load_digits().images / 16``; ``y``: ``N`` labels 0-9); or
- one ``.npz`` file made from those by :func:`save_private_data`
  (``python -m tl_helpers private-data make --eurosat FOLDER --digits FILE --out private.npz``).

A part the instructor does not provide is graded on the built-in split. Checks find the data through
:data:`PRIVATE_DATA_ENV`, which the grader sets only while its own checks run.

Messages that can reach a learner (:func:`active_private_data`) never name a file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tl_helpers.data import EUROSAT_CLASSES, EUROSAT_IMAGE_SIZE, IMAGE_SUFFIXES, DataError, ImageTensors, decode_image
from tl_helpers.files import atomic_path

__all__ = [
    "DIGITS_FILE",
    "EUROSAT_FOLDER",
    "PRIVATE_DATA_ENV",
    "PrivateData",
    "PrivateDataError",
    "active_private_data",
    "load_digits_file",
    "load_eurosat_folder",
    "load_private_data",
    "save_private_data",
]

PRIVATE_DATA_ENV = "TL_PRIVATE_DATA"
EUROSAT_FOLDER = "eurosat"
DIGITS_FILE = "digits.npz"


class PrivateDataError(ValueError):
    """The instructor's private data is missing, malformed or unreadable."""


@dataclass
class PrivateData:
    """The instructor's private data; a part that was not provided is ``None``.

    Attributes:
        eurosat: 64 x 64 EuroSAT-class images (their ``files`` are anonymous: ``private/00000``, ...).
        digits: ``(X, y)``: ``N x 8 x 8`` float32 in [0, 1] and int64 labels.
    """

    eurosat: ImageTensors | None = None
    digits: tuple[np.ndarray, np.ndarray] | None = None

    def describe(self) -> str:
        """One line: what is there (counts only, no file names)."""
        parts = []
        if self.eurosat is not None:
            per_class = torch.bincount(self.eurosat.labels, minlength=len(EUROSAT_CLASSES)).tolist()
            parts.append(f"{len(self.eurosat)} EuroSAT images ({sum(1 for n in per_class if n)} classes)")
        else:
            parts.append("no EuroSAT images (the built-in held-out images are used)")
        if self.digits is not None:
            parts.append(f"{len(self.digits[1])} digits")
        else:
            parts.append("no digits (the built-in private digits are used)")
        return ", ".join(parts)


def _anonymous(images: torch.Tensor, labels: torch.Tensor) -> ImageTensors:
    return ImageTensors(images, labels, [f"private/{i:05d}" for i in range(len(labels))], EUROSAT_CLASSES)


def _check_eurosat(images: np.ndarray, labels: np.ndarray, where: str) -> ImageTensors:
    size = EUROSAT_IMAGE_SIZE
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (3, size, size):
        raise PrivateDataError(f"{where}: EuroSAT images must be uint8 N x 3 x {size} x {size}, got {images.shape}.")
    return _anonymous(torch.from_numpy(images.copy()), torch.from_numpy(_labels(labels, len(images), where)))


def _labels(labels: np.ndarray, n: int, where: str) -> np.ndarray:
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise PrivateDataError(f"{where}: expected {n} integer labels, got {labels.dtype} {labels.shape}.")
    if n == 0 or labels.min() < 0 or labels.max() > 9:
        raise PrivateDataError(f"{where}: labels must be 0-9 (and at least one example).")
    return labels.astype(np.int64)


def _check_digits(X: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if X.ndim == 2 and X.shape[1] == 64:
        X = X.reshape(-1, 8, 8)
    if X.ndim != 3 or X.shape[1:] != (8, 8) or not np.issubdtype(X.dtype, np.floating):
        raise PrivateDataError(f"{where}: X must be floats of shape N x 8 x 8, got {X.dtype} {X.shape}.")
    if not np.isfinite(X).all() or X.min() < 0 or X.max() > 1:
        raise PrivateDataError(f"{where}: X must lie in [0, 1] (sklearn's digits / 16), got {X.min()}..{X.max()}.")
    return X.astype(np.float32), _labels(y, len(X), where)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as exc:
        raise PrivateDataError(f"{path} is not a readable .npz file ({exc}).") from exc


def load_digits_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Digits from an ``.npz`` file with arrays ``X`` (``N x 8 x 8`` in [0, 1]) and ``y`` (labels 0-9)."""
    path = Path(path)
    arrays = _load_npz(path)
    if "X" not in arrays or "y" not in arrays:
        raise PrivateDataError(f"{path} must hold arrays X and y, has {sorted(arrays)}.")
    return _check_digits(arrays["X"], arrays["y"], str(path))


def load_eurosat_folder(folder: str | os.PathLike) -> ImageTensors:
    """Decode ``folder/<Class>/<image>`` (EuroSAT's class names; missing classes allowed) without caching."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PrivateDataError(f"{folder} is not a folder of EuroSAT class folders.")
    unknown = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in EUROSAT_CLASSES)
    if unknown:
        raise PrivateDataError(f"{folder}: {unknown} are not EuroSAT classes ({', '.join(EUROSAT_CLASSES)}).")
    images, labels = [], []
    for label, name in enumerate(EUROSAT_CLASSES):
        class_folder = folder / name
        files = sorted(class_folder.iterdir()) if class_folder.is_dir() else []
        for file in files:
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                try:
                    images.append(decode_image(file)[0])
                except DataError as exc:
                    raise PrivateDataError(str(exc)) from exc
                labels.append(label)
    if not images:
        raise PrivateDataError(f"{folder} holds no images in its class folders.")
    return _anonymous(torch.stack(images), torch.tensor(labels, dtype=torch.int64))


def load_private_data(path: str | os.PathLike) -> PrivateData:
    """Load (and validate) the instructor's private data from a folder or a single ``.npz`` file.

    Raises:
        PrivateDataError: nothing usable there, or a malformed part (the message names the file).
    """
    path = Path(path)
    if path.is_dir():
        eurosat_folder, digits_file = path / EUROSAT_FOLDER, path / DIGITS_FILE
        found = PrivateData(
            load_eurosat_folder(eurosat_folder) if eurosat_folder.is_dir() else None,
            load_digits_file(digits_file) if digits_file.is_file() else None,
        )
        if found.eurosat is None and found.digits is None:
            raise PrivateDataError(
                f"{path} holds neither {EUROSAT_FOLDER}/<Class>/ image folders nor {DIGITS_FILE}: "
                "see `python -m tl_helpers private-data make --help`."
            )
        return found
    if not path.is_file():
        raise PrivateDataError(f"{path} does not exist. Fix: give a folder or a file made by `private-data make`.")
    arrays = _load_npz(path)
    found = PrivateData()
    if "eurosat_images" in arrays and "eurosat_labels" in arrays:
        found.eurosat = _check_eurosat(arrays["eurosat_images"], arrays["eurosat_labels"], str(path))
    if "digits_X" in arrays and "digits_y" in arrays:
        found.digits = _check_digits(arrays["digits_X"], arrays["digits_y"], str(path))
    if found.eurosat is None and found.digits is None:
        raise PrivateDataError(f"{path} holds none of eurosat_images/eurosat_labels, digits_X/digits_y.")
    return found


def save_private_data(
    out: str | os.PathLike,
    *,
    eurosat: str | os.PathLike | None = None,
    digits: str | os.PathLike | None = None,
) -> Path:
    """Write one ``.npz`` file (``eurosat_images``, ``eurosat_labels``, ``digits_X``, ``digits_y``) to grade with.

    Args:
        out: The file to write.
        eurosat: A folder of EuroSAT class folders (``<Class>/*.jpg``).
        digits: An ``.npz`` file with ``X`` and ``y`` (see :func:`load_digits_file`).

    Returns:
        The path written.
    """
    if eurosat is None and digits is None:
        raise PrivateDataError("give --eurosat FOLDER, --digits FILE, or both.")
    arrays: dict[str, np.ndarray] = {}
    if eurosat is not None:
        images = load_eurosat_folder(eurosat)
        arrays["eurosat_images"] = images.images.numpy()
        arrays["eurosat_labels"] = images.labels.numpy()
    if digits is not None:
        arrays["digits_X"], arrays["digits_y"] = load_digits_file(digits)
    out = Path(out)
    with atomic_path(out) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return out


def active_private_data() -> PrivateData | None:
    """The instructor's data named by :data:`PRIVATE_DATA_ENV` (``None`` when unset or empty).

    Checks call this; their messages reach learners, so a failure here names no file.

    Raises:
        PrivateDataError: the variable is set and the data cannot be loaded.
    """
    value = os.environ.get(PRIVATE_DATA_ENV, "")
    if not value:
        return None
    try:
        return load_private_data(value)
    except (PrivateDataError, OSError) as exc:
        raise PrivateDataError(
            f"the grader's private data could not be loaded ({type(exc).__name__}); tell your instructor"
        ) from None
