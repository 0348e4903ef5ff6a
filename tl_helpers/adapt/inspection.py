"""Read a learner's folder of images once: find the classes, decode every file, report every problem.

The folder is laid out like torchvision's ``ImageFolder``: one sub-folder per class,
images inside (nested sub-folders count for their class)::

    DIR/cat/a.jpg
    DIR/cat/holiday/b.png
    DIR/dog/c.jpg

:func:`inspect_folder` makes ONE pass over the files: each file is read once, hashed
(sha256 of its bytes) and, unless its content is already in the decode cache,
decoded with :func:`load_image` (the same decoder prediction uses). Nothing stops
the pass except a folder that cannot be used at all (:class:`FolderError`); every
other problem is collected and reported:

- unreadable images (empty, truncated, not really an image, too many pixels): skipped;
- files that are not images (``notes.txt``): skipped;
- hidden and tool entries (``.DS_Store``, ``.ipynb_checkpoints/``, ``__MACOSX/``,
  ``Thumbs.db``, ``desktop.ini``, any dot-file or dot-folder) and files lying directly
  in ``DIR``: ignored;
- identical files within one class: the first (sorted order) is kept, the others dropped;
- identical files in two or more classes (a label conflict): every copy is excluded,
  since the label is ambiguous.

Decode cache: one file per (absolute folder, image size), ``<cache dir>/adapt/
<folder hash>-<size>px.pt``, keyed by content, so a second run decodes nothing and a
changed file is noticed (its hash changes). A corrupt or foreign cache file is
rebuilt with a warning; a cache that cannot be written (read-only disk) is skipped
with a warning.
"""

from __future__ import annotations

import hashlib
import io
import os
import statistics
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from tl_helpers.data import DataError, ImageTensors
from tl_helpers.files import CacheWriteError, atomic_torch_save, sha256_text
from tl_helpers.paths import cache_dir

__all__ = [
    "CACHE_FORMAT",
    "GEOMETRY",
    "IGNORED_NAMES",
    "IMAGE_EXTENSIONS",
    "FolderError",
    "ImageDecodeError",
    "Inspection",
    "cache_file_for",
    "inspect_folder",
    "load_image",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
"""File extensions (lower case) that are decoded; other files are reported as not images."""

IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini", "__pycache__"})
"""Tool entries skipped silently (besides every name starting with a dot)."""

GEOMETRY = "shorter side to S, centre crop"
"""How :func:`load_image` maps an image to ``S x S`` (for the model's config)."""

CACHE_FORMAT = 1
"""Version of the decode cache layout and of the decoder; bump it when :func:`load_image` changes."""

_FIX_IMAGE = "open it in an image viewer; re-export or re-download it, or delete it"
_EXIF_ORIENTATION = 0x0112


class FolderError(DataError):
    """The folder cannot be used; the message names the folder (or classes) and the fix.

    Attributes:
        inspection: The inspection so far when the files were read (too few images per
            class), so a caller can still print :meth:`Inspection.problems_text`; else ``None``.
    """

    def __init__(self, message: str, inspection: Inspection | None = None) -> None:
        super().__init__(message)
        self.inspection = inspection


class ImageDecodeError(DataError):
    """One file cannot be decoded; the message names the file, the reason and the fix.

    Attributes:
        path: The file.
        reason: Why, in a few words (``"empty file"``, ``"truncated file"``, ...).
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: cannot decode ({reason}). Fix: {_FIX_IMAGE}.")
        self.path = str(path)
        self.reason = reason


class _DecodeFailure(Exception):
    """Internal: decoding failed for ``reason`` (the caller adds the file name)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ----------------------------------------------------------------------------- decoding


def load_image(path: str | os.PathLike, size: int) -> torch.Tensor:
    """Decode one image file to a ``3 x size x size`` uint8 tensor, the same way for training and prediction.

    Steps:

    1. open with PIL (animated images: the first frame); JPEGs are decoded at a reduced
       scale when they are much larger than ``size`` (``Image.draft``), which makes huge
       photos fast and changes nothing visible at ``size``;
    2. honour the EXIF orientation tag (``ImageOps.exif_transpose``);
    3. convert to RGB: transparent images (RGBA, LA, palette or grey with a transparent
       colour) are composited on a white background; grey, 1-bit, palette, CMYK and YCbCr
       are converted; 16-bit images (``I;16``) are divided by 257; 32-bit integer images
       (``I``) are used as they are when within 0..255, divided by 257 when within
       0..65535, else min-max scaled; float images (``F``) are multiplied by 255 when within
       0..1, else min-max scaled;
    4. geometry (:data:`GEOMETRY`): scale the shorter side to ``size`` (bicubic) and crop the
       centre ``size x size`` square.

    Args:
        path: The image file.
        size: Side length of the result in pixels.

    Returns:
        uint8 tensor ``3 x size x size`` (channels R, G, B).

    Raises:
        ImageDecodeError: the file is missing, empty, truncated, not an image, has too many
            pixels (``PIL.Image.DecompressionBombError``) or cannot be decoded otherwise.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(path, f"cannot read the file: {exc.strerror or exc}") from exc
    try:
        image, _ = _decode(data, size)
    except _DecodeFailure as exc:
        raise ImageDecodeError(path, exc.reason) from exc
    return image


def _decode(data: bytes, size: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Decode bytes to ``3 x size x size`` uint8 and what was found (format, mode, size, EXIF).

    Raises:
        _DecodeFailure: with the reason.
    """
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    if not data:
        raise _DecodeFailure("empty file")
    try:
        with warnings.catch_warnings():
            # between MAX_IMAGE_PIXELS and twice that, PIL only warns: decode such photos quietly
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                info: dict[str, Any] = {"format": img.format or "unknown", "mode": img.mode}
                width, height = img.size
                orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
                rotated = orientation in (2, 3, 4, 5, 6, 7, 8)
                if orientation in (5, 6, 7, 8):  # displayed with width and height swapped
                    width, height = height, width
                info.update(width=int(width), height=int(height), exif_rotated=bool(rotated))
                if img.format == "JPEG":
                    img.draft("RGB", (size, size))  # never smaller than size x size
                img.load()
                frame = ImageOps.exif_transpose(img) if rotated else img
                rgb = _to_rgb(frame)
                side = min(rgb.size)
                left, top = (rgb.width - side) / 2, (rgb.height - side) / 2
                if rgb.size != (size, size):
                    rgb = rgb.resize(
                        (size, size),
                        Image.Resampling.BICUBIC,
                        box=(left, top, left + side, top + side),
                        reducing_gap=3.0,
                    )
                array = np.asarray(rgb, dtype=np.uint8).copy()
    except _DecodeFailure:
        raise
    except Image.DecompressionBombError as exc:
        raise _DecodeFailure(f"too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise _DecodeFailure("not an image, or a format Pillow cannot read") from exc
    except MemoryError as exc:
        raise _DecodeFailure("out of memory while decoding") from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error... on broken files
        text = str(exc)
        if "truncated" in text.lower():
            raise _DecodeFailure("truncated file") from exc
        raise _DecodeFailure(f"{type(exc).__name__}: {text}" if text else type(exc).__name__) from exc
    if array.shape != (size, size, 3):  # defensive: never hand back a wrongly shaped image
        raise _DecodeFailure(f"unexpected decoded shape {array.shape}")
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), info


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image to RGB (see :func:`load_image`, step 3)."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_deep_to_uint8(np.asarray(img)), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise _DecodeFailure(f"unsupported image mode {mode}") from exc


def _deep_to_uint8(array: np.ndarray) -> np.ndarray:
    """A 16-bit, 32-bit integer or float single-channel array to uint8 (see :func:`load_image`)."""
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:  # I;16 and friends
        return (array.astype(np.float64) / 257.0).round().astype(np.uint8)
    values = array.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(array.shape, np.uint8)
    low, high = float(finite.min()), float(finite.max())
    if array.dtype.kind in "iu":
        if low >= 0 and high <= 255:
            scaled = values
        elif low >= 0 and high <= 65535:
            scaled = values / 257.0
        else:
            scaled = (values - low) / (high - low) * 255.0
    elif low >= 0 and high <= 1:
        scaled = values * 255.0
    else:
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(scaled, 0, 255).round().astype(np.uint8)


# ----------------------------------------------------------------------------- the inspection


@dataclass
class Inspection:
    """What :func:`inspect_folder` found.

    Attributes:
        root: The folder that was read.
        classes: Sorted class-folder names (hidden and tool folders excluded), indexed by label.
        data: The usable images, decoded at ``image_size``, duplicates and label conflicts removed;
            ``files`` are posix paths relative to ``root`` (``"cat/holiday/b.png"``), sorted by
            class, then path.
        sha256: The sha256 of each usable file's bytes, aligned with ``data.files``.
        image_size: Side length the images were decoded to.
        counts: Usable images per class.
        unreadable: ``(relative path, reason)`` of each image file that could not be decoded.
        not_images: Relative paths of files inside class folders whose extension is not an image's.
        ignored: Relative paths of hidden and tool entries (folders end with ``/``) and of files
            lying directly in ``root``; not looked into.
        duplicates: Groups of identical files within one class, sorted; the first is kept.
        conflicts: Identical files in two or more classes: ``{"sha256", "files", "classes"}``;
            every copy is excluded.
        formats: PIL format names of the decodable files, with counts.
        modes: Original PIL modes of the decodable files, with counts.
        sizes: ``{"width": {"min", "median", "max"}, "height": {...}}`` of the decodable files
            (as displayed, after EXIF orientation); empty when none was decodable.
        exif_rotated: Decodable files whose EXIF orientation was not "upright".
        decoded: Files decoded in this run (content not in the cache; identical copies are decoded once).
        from_cache: Files whose content was found in the decode cache.
        seconds: Wall time of the inspection.
        cache_file: The decode cache file (``None`` when the folder was never read).
    """

    root: Path
    classes: tuple[str, ...]
    data: ImageTensors
    sha256: list[str]
    image_size: int
    counts: dict[str, int] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    formats: dict[str, int] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, dict[str, float]] = field(default_factory=dict)
    exif_rotated: int = 0
    decoded: int = 0
    from_cache: int = 0
    seconds: float = 0.0
    cache_file: Path | None = None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict for the report.

        Keys: ``root``, ``image_size``, ``geometry``, ``classes``, ``counts``, ``total``,
        ``files_seen``, ``unreadable`` (list of ``{"file", "reason"}``), ``not_images``,
        ``ignored``, ``duplicates``, ``conflicts``, ``formats``, ``modes``, ``sizes``,
        ``exif_rotated``, ``decoded``, ``from_cache``, ``seconds``, ``cache_file``.
        """
        duplicates_dropped = sum(len(group) - 1 for group in self.duplicates)
        conflict_files = sum(len(c["files"]) for c in self.conflicts)
        return {
            "root": str(self.root),
            "image_size": self.image_size,
            "geometry": GEOMETRY,
            "classes": list(self.classes),
            "counts": dict(self.counts),
            "total": len(self.data),
            "files_seen": len(self.data) + duplicates_dropped + conflict_files + len(self.unreadable),
            "unreadable": [{"file": rel, "reason": reason} for rel, reason in self.unreadable],
            "not_images": list(self.not_images),
            "ignored": list(self.ignored),
            "duplicates": [list(group) for group in self.duplicates],
            "conflicts": [
                {"sha256": c["sha256"], "files": list(c["files"]), "classes": list(c["classes"])}
                for c in self.conflicts
            ],
            "formats": dict(self.formats),
            "modes": dict(self.modes),
            "sizes": {k: dict(v) for k, v in self.sizes.items()},
            "exif_rotated": self.exif_rotated,
            "decoded": self.decoded,
            "from_cache": self.from_cache,
            "seconds": round(self.seconds, 3),
            "cache_file": str(self.cache_file) if self.cache_file is not None else None,
        }

    def problems_text(self) -> list[str]:
        """One human-readable line per problem, naming the file(s) and what was done."""
        lines = [f"{rel}: cannot decode ({reason}) — skipped" for rel, reason in self.unreadable]
        for rel in self.not_images:
            suffix = Path(rel).suffix or "none"
            lines.append(f"{rel}: not an image (extension {suffix}) — skipped")
        for group in self.duplicates:
            dropped = ", ".join(group[1:])
            lines.append(f"{dropped}: same content as {group[0]} — duplicate dropped, {group[0]} kept")
        for c in self.conflicts:
            lines.append(
                f"{', '.join(c['files'])}: identical image in classes {', '.join(c['classes'])} "
                "— label ambiguous, all copies excluded"
            )
        for rel in self.ignored:
            if _is_hidden_path(rel):
                lines.append(f"{rel}: hidden or tool file — ignored")
            else:
                lines.append(f"{rel}: not inside a class folder — ignored")
        return lines


def _is_hidden_name(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_NAMES


def _is_hidden_path(rel: str) -> bool:
    return any(_is_hidden_name(part) for part in rel.rstrip("/").split("/"))


def cache_file_for(root: str | os.PathLike, image_size: int, cache: str | os.PathLike | None = None) -> Path:
    """The decode cache file of ``root`` at ``image_size``.

    Args:
        root: The image folder.
        image_size: Decode size.
        cache: Folder for the cache file; default ``<cache dir>/adapt`` (:func:`tl_helpers.paths.cache_dir`).

    Returns:
        ``<folder>/<sha256 of the absolute root, 16 hex digits>-<size>px.pt``.
    """
    folder = Path(cache) if cache is not None else cache_dir() / "adapt"
    return folder / f"{sha256_text(str(Path(root).resolve()))[:16]}-{image_size}px.pt"


def _scan(root: Path) -> tuple[list[str], list[tuple[str, str]], list[str], list[str], list[tuple[str, str]]]:
    """Classes, ``(relative path, class)`` of image files, non-image files, ignored entries, unlistable folders."""
    classes: list[str] = []
    ignored: list[str] = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if _is_hidden_name(entry.name):
            ignored.append(entry.name + ("/" if entry.is_dir() else ""))
        elif entry.is_dir():
            classes.append(entry.name)
        else:
            ignored.append(entry.name)
    images: list[tuple[str, str]] = []
    not_images: list[str] = []
    unlistable: list[tuple[str, str]] = []
    for cls in classes:
        _walk(root / cls, cls, images, not_images, ignored, unlistable, set())
    return classes, images, not_images, ignored, unlistable


def _walk(
    folder: Path,
    rel: str,
    images: list[tuple[str, str]],
    not_images: list[str],
    ignored: list[str],
    unlistable: list[tuple[str, str]],
    seen: set[str],
) -> None:
    """Collect the files under one class folder (recursively, following links once)."""
    real = os.path.realpath(folder)
    if real in seen:  # a link loop
        return
    seen.add(real)
    cls = rel.split("/", 1)[0]
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        unlistable.append((f"{rel}/", f"cannot list the folder: {exc.strerror or exc}"))
        return
    for entry in entries:
        child = f"{rel}/{entry.name}"
        if _is_hidden_name(entry.name):
            ignored.append(child + ("/" if entry.is_dir() else ""))
        elif entry.is_dir():
            _walk(entry, child, images, not_images, ignored, unlistable, seen)
        elif entry.suffix.lower() in IMAGE_EXTENSIONS:
            images.append((child, cls))
        else:
            not_images.append(child)


def _load_cache(path: Path, size: int) -> tuple[dict[str, dict[str, Any]], bool]:
    """The usable entries of the cache file and whether the file needs rewriting."""
    if not path.is_file():
        return {}, True
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated or not a torch file
        warnings.warn(f"The decode cache {path} is unreadable ({type(exc).__name__}); rebuilding it.", stacklevel=3)
        return {}, True
    if isinstance(blob, dict) and "format" in blob and blob.get("format") != CACHE_FORMAT:
        return {}, True  # written by another version of the decoder: rebuild quietly
    if not (isinstance(blob, dict) and blob.get("size") == size and isinstance(blob.get("entries"), dict)):
        warnings.warn(f"The decode cache {path} is not an adapt cache of {size}px images; rebuilding it.", stacklevel=3)
        return {}, True
    entries = {sha: entry for sha, entry in blob["entries"].items() if _valid_entry(entry, size)}
    return entries, len(entries) != len(blob["entries"])


def _valid_entry(entry: object, size: int) -> bool:
    if not isinstance(entry, dict):
        return False
    image = entry.get("image")
    if image is None:
        return isinstance(entry.get("error"), str)
    return (
        isinstance(image, torch.Tensor)
        and image.dtype == torch.uint8
        and tuple(image.shape) == (3, size, size)
        and all(k in entry for k in ("format", "mode", "width", "height", "exif_rotated"))
    )


def inspect_folder(
    root: str | os.PathLike,
    *,
    image_size: int = 64,
    min_per_class: int = 5,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
) -> Inspection:
    """Read and decode every image of a class-per-folder dataset once; report every problem.

    See the module docstring for what counts as a problem and what is done about it.

    Args:
        root: The folder, one sub-folder per class.
        image_size: Side length to decode to (:func:`load_image`).
        min_per_class: Fewest usable images a class may have (at least 1).
        cache: Folder for the decode cache; default ``<cache dir>/adapt``.
        progress: Show a tqdm bar over the files.

    Returns:
        The :class:`Inspection`.

    Raises:
        FolderError: ``root`` is missing or not a folder, has fewer than two class folders, or
            some class has fewer than ``min_per_class`` usable images (the message names every
            such class with its count; ``exc.inspection`` holds the inspection).
        ValueError: ``image_size`` or ``min_per_class`` is below 1.
    """
    from tqdm.auto import tqdm

    if image_size < 1:
        raise ValueError(f"image_size must be at least 1, got {image_size}")
    if min_per_class < 1:
        raise ValueError(f"min_per_class must be at least 1, got {min_per_class}")
    start = time.perf_counter()
    root = Path(root).expanduser()
    _check_root(root)
    class_list, files, not_images, ignored, unreadable = _scan(root)
    _check_classes(root, class_list, ignored)
    classes = tuple(class_list)

    cache_path = cache_file_for(root, image_size, cache)
    cached, rewrite = _load_cache(cache_path, image_size)
    fresh: dict[str, dict[str, Any]] = {}
    readable: list[tuple[str, str, str]] = []  # (rel, class, sha)
    decoded = from_cache = 0
    for rel, cls in tqdm(files, desc=f"inspecting {root.name}", unit="file", disable=not progress, leave=False):
        try:
            data = (root / rel).read_bytes()
        except OSError as exc:
            unreadable.append((rel, f"cannot read the file: {exc.strerror or exc}"))
            continue
        sha = hashlib.sha256(data).hexdigest()
        if sha in cached:
            entry = cached[sha]
            from_cache += 1
        else:
            entry = fresh.get(sha) or _entry(data, image_size)
            decoded += 1
        fresh[sha] = entry
        if entry["image"] is None:
            unreadable.append((rel, entry["error"]))
        else:
            readable.append((rel, cls, sha))
    if rewrite or decoded or set(fresh) != set(cached):
        try:
            atomic_torch_save({"format": CACHE_FORMAT, "size": image_size, "entries": fresh}, cache_path)
        except CacheWriteError as exc:
            warnings.warn(f"{exc} Continuing without the decode cache.", stacklevel=2)

    kept, duplicates, conflicts = _dedupe(readable)
    label = {cls: i for i, cls in enumerate(classes)}
    kept.sort(key=lambda item: (label[item[1]], item[0]))
    images = [fresh[sha]["image"] for _, _, sha in kept]
    data = ImageTensors(
        images=torch.stack(images) if images else torch.empty((0, 3, image_size, image_size), dtype=torch.uint8),
        labels=torch.tensor([label[cls] for _, cls, _ in kept], dtype=torch.int64),
        files=[rel for rel, _, _ in kept],
        classes=classes,
    )
    counts = dict.fromkeys(classes, 0)
    counts.update(Counter(cls for _, cls, _ in kept))
    entries = [fresh[sha] for _, _, sha in readable]
    inspection = Inspection(
        root=root,
        classes=classes,
        data=data,
        sha256=[sha for _, _, sha in kept],
        image_size=image_size,
        counts=counts,
        unreadable=unreadable,
        not_images=not_images,
        ignored=ignored,
        duplicates=duplicates,
        conflicts=conflicts,
        formats=dict(sorted(Counter(str(e["format"]) for e in entries).items())),
        modes=dict(sorted(Counter(str(e["mode"]) for e in entries).items())),
        sizes=_sizes(entries),
        exif_rotated=sum(bool(e["exif_rotated"]) for e in entries),
        decoded=decoded,
        from_cache=from_cache,
        cache_file=cache_path,
    )
    inspection.seconds = time.perf_counter() - start
    _check_counts(inspection, min_per_class)
    return inspection


def _entry(data: bytes, size: int) -> dict[str, Any]:
    """One cache entry: the decoded image and what was found, or the error."""
    try:
        image, info = _decode(data, size)
    except _DecodeFailure as exc:
        return {"image": None, "error": exc.reason}
    return {"image": image, "error": None, **info}


def _dedupe(
    readable: list[tuple[str, str, str]],
) -> tuple[list[tuple[str, str, str]], list[list[str]], list[dict[str, Any]]]:
    """Keep one file per content within a class; drop every copy of content found in several classes."""
    by_sha: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for item in readable:
        by_sha[item[2]].append(item)
    kept: list[tuple[str, str, str]] = []
    duplicates: list[list[str]] = []
    conflicts: list[dict[str, Any]] = []
    for sha, items in by_sha.items():
        items.sort(key=lambda item: item[0])
        classes = sorted({cls for _, cls, _ in items})
        if len(classes) > 1:
            conflicts.append({"sha256": sha, "files": [rel for rel, _, _ in items], "classes": classes})
            continue
        kept.append(items[0])
        if len(items) > 1:
            duplicates.append([rel for rel, _, _ in items])
    duplicates.sort()
    conflicts.sort(key=lambda c: c["files"])
    return kept, duplicates, conflicts


def _sizes(entries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    if not entries:
        return {}
    out: dict[str, dict[str, float]] = {}
    for key in ("width", "height"):
        values = [int(e[key]) for e in entries]
        median = float(statistics.median(values))
        out[key] = {"min": min(values), "median": int(median) if median.is_integer() else median, "max": max(values)}
    return out


def _check_root(root: Path) -> None:
    if not root.exists():
        raise FolderError(
            f"The folder {root} does not exist. Fix: check the path; it should hold one sub-folder per class, "
            "e.g. DIR/cat/*.jpg and DIR/dog/*.jpg."
        )
    if not root.is_dir():
        hint = " If it is an archive, extract it first and pass the extracted folder." if root.suffix else ""
        raise FolderError(f"{root} is a file, not a folder.{hint} Fix: pass a folder with one sub-folder per class.")


def _check_classes(root: Path, classes: list[str], ignored: list[str]) -> None:
    if len(classes) >= 2:
        return
    layout = "Fix: put the images in one sub-folder per class, e.g. DIR/cat/*.jpg and DIR/dog/*.jpg"
    if not classes:
        loose = [rel for rel in ignored if not _is_hidden_path(rel) and Path(rel).suffix.lower() in IMAGE_EXTENSIONS]
        where = f" ({len(loose)} image(s) lie directly in it, e.g. {loose[0]})" if loose else ""
        raise FolderError(f"The folder {root} has no class sub-folders{where}. {layout}.")
    only = classes[0]
    nested = root / only
    sub = [p.name for p in nested.iterdir() if p.is_dir() and not _is_hidden_name(p.name)] if nested.is_dir() else []
    hint = (
        f" If {nested} holds the class folders ({', '.join(sorted(sub)[:3])}...), pass that folder instead."
        if len(sub) >= 2
        else ""
    )
    raise FolderError(
        f"The folder {root} has only one class sub-folder ({only!r}); a classifier needs at least two classes."
        f"{hint} {layout}."
    )


def _check_counts(inspection: Inspection, min_per_class: int) -> None:
    short = {cls: n for cls, n in inspection.counts.items() if n < min_per_class}
    if not short:
        return
    excluded: Counter[str] = Counter()
    for rel, _ in inspection.unreadable:
        excluded[rel.split("/", 1)[0]] += 1
    for group in inspection.duplicates:
        excluded[group[0].split("/", 1)[0]] += len(group) - 1
    for c in inspection.conflicts:
        for rel in c["files"]:
            excluded[rel.split("/", 1)[0]] += 1
    parts = []
    for cls, n in short.items():
        note = f", {excluded[cls]} more unusable (unreadable, duplicate or conflicting)" if excluded[cls] else ""
        parts.append(f"{cls!r}: {n} usable image{'s' if n != 1 else ''}{note}")
    raise FolderError(
        f"In {inspection.root}, {len(short)} class{'es have' if len(short) > 1 else ' has'} fewer than "
        f"{min_per_class} usable images: {'; '.join(parts)}. Fix: add images to these classes, or remove "
        "their folders, or lower --min-per-class.",
        inspection,
    )
