"""EuroSAT RGB as tensors: scan the class folders, split, pre-decode (cached), load in batches.

Finding, verifying and extracting the archive lives in :mod:`tl_helpers.archive`;
its public names are re-exported here, so ``data.find_eurosat`` and
``data.DataError`` keep working.

Failure policy (see README, "Bad data"): an empty class folder and an
undecodable image stop with one error naming the file and the fix. Stray
non-image files are skipped and reported; grayscale/RGBA/odd-sized images are
converted and reported.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from tl_helpers.archive import (
    ARCHIVE_NAMES,
    COMPLETE_MARKER,
    DOWNLOAD_URL,
    EUROSAT_CLASSES,
    EUROSAT_IMAGE_SIZE,
    EUROSAT_NUM_IMAGES,
    KNOWN_MD5,
    KNOWN_SHA256,
    DataError,
    DataNotFoundError,
    candidate_archives,
    eurosat_root,
    extract_archive,
    find_eurosat,
    has_class_folders,
    verify_archive,
)
from tl_helpers.device import pin_memory_for
from tl_helpers.files import load_or_build, sha256_text
from tl_helpers.paths import cache_dir

__all__ = [
    # re-exported from tl_helpers.archive
    "ARCHIVE_NAMES",
    "COMPLETE_MARKER",
    "DOWNLOAD_URL",
    "EUROSAT_CLASSES",
    "EUROSAT_IMAGE_SIZE",
    "EUROSAT_NUM_IMAGES",
    "KNOWN_MD5",
    "KNOWN_SHA256",
    "DataError",
    "DataNotFoundError",
    "candidate_archives",
    "eurosat_root",
    "extract_archive",
    "find_eurosat",
    "has_class_folders",
    "verify_archive",
    # this module
    "CACHE_FORMAT",
    "IMAGE_SUFFIXES",
    "BatchTransform",
    "ImageTensors",
    "Sample",
    "ScanReport",
    "Split",
    "TensorImageDataset",
    "decode_image",
    "decode_samples",
    "device_transform",
    "DIGITS_PUBLIC_SIZE",
    "digits_public_indices",
    "load_digits_public",
    "load_eurosat",
    "load_eurosat_heldout",
    "make_loader",
    "make_split",
    "per_class_indices",
    "random_flip_rot90",
    "random_hflip",
    "scan_folder",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
CACHE_FORMAT = 2  # 2: {key, value} entries written by files.load_or_build


# ----------------------------------------------------------------------------- scanning and splitting

Sample = tuple[str, int]  # (path relative to the root, class index)


@dataclass
class ScanReport:
    """What :func:`scan_folder` found: the samples and what it skipped."""

    samples: list[Sample]
    skipped: list[str] = field(default_factory=list)


def scan_folder(root: str | os.PathLike, classes: Sequence[str] = EUROSAT_CLASSES) -> ScanReport:
    """List ``<root>/<Class>/<image>`` files, sorted; skip (and report) non-image files.

    Raises:
        DataError: a class folder is missing or holds no images.
    """
    root = Path(root)
    samples: list[Sample] = []
    skipped: list[str] = []
    for label, cls in enumerate(classes):
        folder = root / cls
        if not folder.is_dir():
            raise DataError(
                f"Class folder {folder} is missing. Fix: re-extract the archive "
                f"(delete {root} and run `python -m tl_helpers data prepare`)."
            )
        found = []
        for entry in sorted(folder.iterdir()):
            if entry.suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
                found.append((f"{cls}/{entry.name}", label))
            else:
                skipped.append(str(entry))
        if not found:
            raise DataError(
                f"Class folder {folder} holds no images. Fix: re-extract the archive "
                f"(delete {root} and run `python -m tl_helpers data prepare`)."
            )
        samples += found
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} non-image file(s) in {root}, e.g. {skipped[0]}", stacklevel=2)
    return ScanReport(samples, skipped)


@dataclass(frozen=True)
class Split:
    """The quick-check split: lists of (relative path, label)."""

    train: list[Sample]
    val: list[Sample]
    test: list[Sample]

    def __getitem__(self, name: str) -> list[Sample]:
        if name not in ("train", "val", "test"):
            raise KeyError(f"Unknown split {name!r}; use 'train', 'val' or 'test'.")
        return getattr(self, name)

    def digest(self) -> str:
        """sha256 over the three file lists: identical on every machine."""
        return sha256_text(
            *(f"{name}:{path}:{label}" for name in ("train", "val", "test") for path, label in self[name])
        )


def _natural_key(path: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path))


def make_split(
    samples: Sequence[Sample],
    *,
    train_per_class: int = 500,
    val_per_class: int = 100,
    test_per_class: int = 300,
    seed: int = 0,
) -> Split:
    """A seeded, class-balanced train/val/test split with no overlap.

    Each class's files are sorted (natural order, so the result does not depend
    on the file system), shuffled with ``numpy.random.default_rng([seed, class])``
    and cut into train, val and test. The default gives the course's
    quick check: 5,000 training, 1,000 validation and 3,000 test images.

    Raises:
        DataError: a class has fewer images than the split needs.
    """
    by_class: dict[int, list[str]] = {}
    for path, label in samples:
        by_class.setdefault(label, []).append(path)
    need = train_per_class + val_per_class + test_per_class
    parts: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for label in sorted(by_class):
        files = sorted(by_class[label], key=_natural_key)
        if len(files) < need:
            raise DataError(
                f"Class {label} has {len(files)} images but the split needs {need} "
                f"({train_per_class}+{val_per_class}+{test_per_class}); lower the per-class counts."
            )
        order = np.random.default_rng([seed, label]).permutation(len(files))
        chosen = [files[i] for i in order[:need]]
        parts["train"] += [(p, label) for p in chosen[:train_per_class]]
        parts["val"] += [(p, label) for p in chosen[train_per_class : train_per_class + val_per_class]]
        parts["test"] += [(p, label) for p in chosen[train_per_class + val_per_class :]]
    return Split(**parts)


def per_class_indices(labels: Sequence[int] | np.ndarray | torch.Tensor, n: int, seed: int) -> np.ndarray:
    """``n`` indices of every class present in ``labels``, drawn without replacement.

    One ``numpy.random.default_rng(seed)`` draws the classes in ascending order; each
    class's indices come back sorted. Unlike :meth:`ImageTensors.per_class` (one
    generator per class, returns a subset), this works on any label array (NumPy,
    torch or a list) and returns the indices.

    Args:
        labels: One integer label per sample.
        n: Indices per class.
        seed: Seed of the generator.

    Returns:
        An int64 array of ``n * number of classes`` indices.

    Raises:
        ValueError: a class has fewer than ``n`` samples.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    return np.concatenate(
        [np.sort(rng.choice(np.flatnonzero(labels == c), size=n, replace=False)) for c in np.unique(labels)]
    )


# ----------------------------------------------------------------------------- decoding and caching


@dataclass
class ImageTensors:
    """Pre-decoded images of one split.

    Attributes:
        images: uint8 tensor ``N x 3 x H x W``.
        labels: int64 tensor ``N``.
        files: Relative paths, aligned with ``images``.
        classes: Class names, indexed by label.
    """

    images: torch.Tensor
    labels: torch.Tensor
    files: list[str]
    classes: tuple[str, ...] = EUROSAT_CLASSES

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageTensors:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensors(self.images[idx], self.labels[idx], [self.files[i] for i in idx.tolist()], self.classes)

    def per_class(self, n: int, seed: int = 0) -> ImageTensors:
        """A balanced, seeded subset with ``n`` images of each class."""
        chosen: list[int] = []
        for label in range(len(self.classes)):
            idx = (self.labels == label).nonzero().flatten().numpy()
            if len(idx) < n:
                raise ValueError(f"Class {self.classes[label]} has only {len(idx)} images, {n} requested")
            chosen += sorted(np.random.default_rng([seed, label]).choice(idx, size=n, replace=False).tolist())
        return self.subset(chosen)


def decode_image(path: Path, size: int = EUROSAT_IMAGE_SIZE) -> tuple[torch.Tensor, bool]:
    """Decode one image to ``3 x size x size`` uint8; returns (tensor, was_converted).

    Raises:
        DataError: the file cannot be decoded.
    """
    try:
        with Image.open(path) as img:
            img.load()
            converted = img.mode != "RGB" or img.size != (size, size)
            if img.mode != "RGB":
                img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.BICUBIC)
            array = np.asarray(img, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"Image {path} cannot be decoded ({exc}). Fix: delete this file, or re-extract "
            "the archive (delete the eurosat/2750 folder and run "
            "`python -m tl_helpers data prepare`)."
        ) from exc
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), converted


def _cache_key(root: Path, samples: Sequence[Sample], size: int) -> str:
    stats = []
    for rel, label in samples:
        st = (root / rel).stat()
        stats.append(f"{rel}|{label}|{st.st_size}|{st.st_mtime_ns}")
    return sha256_text(CACHE_FORMAT, size, *stats)


def decode_samples(
    root: str | os.PathLike,
    samples: Sequence[Sample],
    *,
    size: int = EUROSAT_IMAGE_SIZE,
    cache: str | os.PathLike | None = None,
    name: str = "split",
    progress: bool = True,
    classes: Sequence[str] = EUROSAT_CLASSES,
) -> ImageTensors:
    """Decode images once into a uint8 tensor, cached on disk.

    The cache file is keyed by the file list, sizes, modification times and
    decode settings; a stale, foreign or corrupt cache is rebuilt, never used
    (:func:`tl_helpers.files.load_or_build`).

    Args:
        root: Folder the relative paths start from.
        samples: (relative path, label) pairs.
        size: Side length to decode to (EuroSAT is 64).
        cache: Cache folder (``None``: ``cache_dir()``).
        name: Label for the cache file and the progress bar.
        progress: Show a tqdm bar while decoding.
        classes: Class names, indexed by label.
    """
    root = Path(root)
    key = _cache_key(root, samples, size)
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"eurosat-{name}-{size}px-{key[:16]}.pt"

    def build() -> dict[str, object]:
        from tqdm.auto import tqdm

        images = torch.empty((len(samples), 3, size, size), dtype=torch.uint8)
        converted = []
        for i, (rel, _) in enumerate(tqdm(samples, desc=f"decoding {name}", disable=not progress, leave=False)):
            images[i], was_converted = decode_image(root / rel, size)
            if was_converted:
                converted.append(rel)
        if converted:
            warnings.warn(
                f"Converted {len(converted)} image(s) to {size}x{size} RGB, e.g. {converted[0]}", stacklevel=3
            )
        labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
        return {"images": images, "labels": labels, "files": [rel for rel, _ in samples]}

    blob = load_or_build(path, key, build, what="tensor cache")
    return ImageTensors(blob["images"], blob["labels"], list(blob["files"]), tuple(classes))


def load_eurosat(
    splits: Sequence[str] = ("train", "val", "test"),
    *,
    data_dir_: str | os.PathLike | None = None,
    seed: int = 0,
    train_per_class: int = 500,
    val_per_class: int = 100,
    test_per_class: int = 300,
    progress: bool = True,
) -> dict[str, ImageTensors]:
    """The quick-check split of EuroSAT as pre-decoded tensors (decoded once, then cached).

    Returns:
        ``{"train": ImageTensors, "val": ..., "test": ...}`` for the requested splits.
    """
    root = find_eurosat(data_dir_)
    report = scan_folder(root)
    split = make_split(
        report.samples,
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        test_per_class=test_per_class,
        seed=seed,
    )
    folder = cache_dir(data_dir_)
    return {name: decode_samples(root, split[name], cache=folder, name=name, progress=progress) for name in splits}


def load_eurosat_heldout(
    per_class: int = 50,
    *,
    seed: int = 0,
    data_dir_: str | os.PathLike | None = None,
    progress: bool = False,
) -> ImageTensors:
    """EuroSAT images *outside* the quick-check split (seed 0), ``per_class`` of each class, decoded and cached.

    The quick check uses 900 of each class's 2,000-3,000 images; the rest never appear in
    :func:`load_eurosat` (with its default seed). This draws a class-balanced, seeded sample from
    that remainder: images no notebook trains, tunes or tests on, for grading a model on data its
    author could not have looked at.

    Args:
        per_class: Images of each class.
        seed: Seed of the draw (``numpy.random.default_rng([seed, class, 2027])``).
        data_dir_: Data folder (``None``: the configured one).
        progress: Show a progress bar while decoding (first call only; then cached).

    Raises:
        DataError: a class has fewer than ``per_class`` images left over.
    """
    root = find_eurosat(data_dir_)
    report = scan_folder(root)
    split = make_split(report.samples)
    used = {path for name in ("train", "val", "test") for path, _ in split[name]}
    by_class: dict[int, list[str]] = {}
    for path, label in report.samples:
        if path not in used:
            by_class.setdefault(label, []).append(path)
    chosen: list[Sample] = []
    for label in sorted(by_class):
        files = sorted(by_class[label], key=_natural_key)
        if len(files) < per_class:
            raise DataError(f"Class {label} has only {len(files)} held-out images, {per_class} requested.")
        order = np.random.default_rng([seed, label, 2027]).permutation(len(files))[:per_class]
        chosen += [(files[i], label) for i in sorted(order.tolist())]
    return decode_samples(root, chosen, cache=cache_dir(data_dir_), name=f"heldout{seed}", progress=progress)


DIGITS_PUBLIC_SIZE = 1000  # of scikit-learn's 1,797 digits; the other 797 are held back for grading


def digits_public_indices(seed: int = 0) -> np.ndarray:
    """Indices (into ``sklearn.datasets.load_digits()``) of the public part: 100 per class, seeded, sorted."""
    from sklearn.datasets import load_digits

    labels = load_digits().target
    return np.sort(per_class_indices(labels, DIGITS_PUBLIC_SIZE // 10, seed))


def load_digits_public(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The public part of scikit-learn's 8x8 digits: images ``N x 8 x 8`` float32 in [0, 1], labels ``N``.

    The remaining 797 digits are a private part, never returned here (graders score on it).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    idx = digits_public_indices(seed)
    return (digits.images[idx] / 16.0).astype(np.float32), digits.target[idx].astype(np.int64)


# ----------------------------------------------------------------------------- loaders


def random_hflip(image: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip, for photos that have an "up" (global RNG, seeded per epoch by ``fit``)."""
    return image.flip(-1) if torch.rand(()) < 0.5 else image


def random_flip_rot90(image: torch.Tensor) -> torch.Tensor:
    """Satellite augmentation: random horizontal flip and a random multiple of 90° rotation.

    Top-down imagery has no canonical "up", so these 8 symmetries are all valid.
    Uses torch's global RNG (seeded per epoch by :func:`tl_helpers.train.fit`).
    """
    k = int(torch.randint(4, ()).item())
    if torch.rand(()) < 0.5:
        image = image.flip(-1)
    return torch.rot90(image, k, dims=(-2, -1)) if k else image


class TensorImageDataset(Dataset):
    """A dataset over pre-decoded uint8 images, with optional per-image augmentation."""

    def __init__(self, data: ImageTensors, augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.data = data
        self.augment = augment

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.data.images[index]
        if self.augment is not None:
            image = self.augment(image)
        return image, self.data.labels[index]


class BatchTransform:
    """Collate uint8 images into a normalised float batch at the model's input size.

    Resizing and normalising whole batches is far cheaper than per image. With
    ``on_device=True`` the collate step only stacks the uint8 images (4x fewer bytes to
    pin and copy than float32) and leaves :meth:`transform` to the consumer, which
    calls it after the batch reached its device (``fit``, ``evaluate``, ``predict`` and
    ``features.extract_features`` do; see :func:`device_transform`). The same operations
    run either way, so on the CPU both give identical numbers.

    Args:
        mean: Per-channel mean (on the [0, 1] scale) of the pretrained model.
        std: Per-channel std.
        image_size: Output side length (EuroSAT is 64; 96 or 128 can help accuracy).
        interpolation: "bicubic" or "bilinear" (what the weights were trained with).
        on_device: Collate to uint8 and leave :meth:`transform` to the consumer.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int = 64,
        interpolation: str = "bicubic",
        on_device: bool = False,
    ):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.image_size = image_size
        self.interpolation = interpolation
        self.on_device = on_device
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __getstate__(self) -> dict[str, object]:  # worker processes get no copies of GPU tensors
        return {**self.__dict__, "_stats": {}}

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([b[0] for b in batch])
        labels = torch.stack([b[1] for b in batch])
        return (images if self.on_device else self.transform(images)), labels

    def _mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device.type == "cpu":
            return self.mean, self.std
        if device not in self._stats:  # copied once per device, not once per batch
            self._stats[device] = (self.mean.to(device), self.std.to(device))
        return self._stats[device]

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``N x 3 x H x W`` to normalised float32 at ``image_size``, on the images' device."""
        x = images.float().div_(255)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(
                x,
                size=(self.image_size, self.image_size),
                mode=self.interpolation,
                align_corners=False,
                antialias=self.interpolation in ("bilinear", "bicubic"),
            )
            x = x.clamp_(0, 1)
        mean, std = self._mean_std(x.device)
        return x.sub_(mean).div_(std)


def device_transform(loader: DataLoader) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The conversion a consumer of ``loader`` must apply on the device, or ``None``.

    Loaders from ``make_loader(..., on_device=True)`` yield uint8 batches; this returns
    their :meth:`BatchTransform.transform`, to call after the copy to the device
    (``tl_helpers.device.to_device(x, device, transform=...)``). Other loaders yield
    model-ready batches: ``None``.
    """
    collate = getattr(loader, "collate_fn", None)
    return collate.transform if getattr(collate, "on_device", False) else None


def make_loader(
    data: ImageTensors,
    *,
    batch_size: int = 64,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    image_size: int = 64,
    interpolation: str = "bicubic",
    train: bool = False,
    augment: bool | Callable[[torch.Tensor], torch.Tensor] | None = None,
    balanced: bool = False,
    seed: int = 0,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    on_device: bool = False,
) -> DataLoader:
    """A DataLoader over pre-decoded images that is safe in notebooks.

    Args:
        data: Images from :func:`load_eurosat` (or any :class:`ImageTensors`).
        batch_size: Images per batch.
        mean, std, interpolation: The pretrained model's preprocessing
            (:func:`tl_helpers.models.get_preprocessing`).
        image_size: Side length fed to the model.
        train: Shuffle (seeded), augment with flips/90° rotations, drop the last partial batch.
        augment: Flips/90° rotations on or off, whatever ``train`` says (default: as ``train``).
            Turn them off for images that have an up, such as digits, or pass your own per-image
            function (uint8 ``3 x H x W`` in and out), e.g. :func:`random_hflip`.
        balanced: Training only: draw every class equally often (with replacement, each image
            weighted by one over its class's size), so an imbalanced training set gives balanced
            batches on average. An epoch still draws ``len(data)`` images.
        seed: Seed of the shuffling generator (the balanced sampler's too).
        device: Pins host memory when this device wants it (:func:`tl_helpers.device.pin_memory_for`).
        num_workers: Worker processes. 0 (the default) never hangs in a notebook;
            raise it only in scripts on machines with spare cores.
        on_device: Yield uint8 batches (pinned for CUDA, copied without blocking) and leave the
            float conversion, resizing and normalisation to the consumer, on its device: ``fit``,
            ``evaluate``, ``predict`` and ``features.extract_features`` do it (:func:`device_transform`).
            Off by default, because a hand-written loop expects float batches.
    """
    if balanced and not train:
        raise ValueError(
            "make_loader(balanced=True) resamples the training data; pass train=True as well "
            "(evaluation loaders must see every image once)"
        )
    generator = torch.Generator().manual_seed(seed)
    pin = pin_memory_for(torch.device(device)) if device is not None else False
    augment = train if augment is None else augment
    if callable(augment):
        dataset = TensorImageDataset(data, augment=augment)
    else:
        dataset = TensorImageDataset(data, augment=random_flip_rot90 if augment else None)
    sampler = None
    if balanced:
        counts = torch.bincount(data.labels)
        weights = 1.0 / counts[data.labels].double()
        # The same generator object as the loader's: fit() reseeds it every epoch.
        sampler = WeightedRandomSampler(weights, num_samples=len(dataset), replacement=True, generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        generator=generator,
        drop_last=train and len(dataset) > batch_size,
        num_workers=num_workers,
        pin_memory=pin,
        collate_fn=BatchTransform(mean, std, image_size, interpolation, on_device=on_device),
        persistent_workers=num_workers > 0,
    )
