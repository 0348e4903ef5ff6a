"""EuroSAT RGB: find it offline, verify, extract atomically, split, pre-decode, load.

Lookup order used by :func:`find_eurosat`:

1. an unpacked folder ``<data dir>/eurosat/2750/<Class>/*.jpg``;
2. a local archive: the ``archive`` argument, ``$TL_EUROSAT_ARCHIVE``, or
   ``EuroSAT_RGB.zip`` / ``EuroSAT.zip`` in the data dir (or its ``eurosat/``);
   it is checksum-verified, then extracted into a temporary folder that is
   renamed into place only when complete;
3. torchvision's download URL, only when downloads are allowed
   (``TL_ALLOW_DOWNLOAD=1`` or ``allow_download=True``);
4. otherwise :class:`DataNotFoundError` saying where to put the archive.

Failure policy (see README, "Bad data"): a wrong checksum, a truncated or
wrongly laid out archive, an empty class folder and an undecodable image stop
with one error naming the file and the fix. Stray non-image files are skipped
and reported; grayscale/RGBA/odd-sized images are converted and reported.

EuroSAT: Helber et al., "EuroSAT: A Novel Dataset and Deep Learning Benchmark
for Land Use and Land Cover Classification", IEEE JSTARS 2019 (MIT licence).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from tl_helpers.files import atomic_path, atomic_torch_save, sha256_file, sha256_text
from tl_helpers.paths import ARCHIVE_ENV, cache_dir, data_dir, downloads_allowed

EUROSAT_CLASSES: tuple[str, ...] = (
    "AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial",
    "Pasture", "PermanentCrop", "Residential", "River", "SeaLake",
)
EUROSAT_NUM_IMAGES = 27_000
EUROSAT_IMAGE_SIZE = 64
# sha256 of known-good archives (the full RGB release as shipped here).
KNOWN_SHA256 = {"c2c32f2142d694c77e0952b21986a642660499ce5fa00a3be8779c2bd96da50e": "EuroSAT_RGB.zip"}
# torchvision's download (EuroSAT.zip) is published with an md5.
KNOWN_MD5 = {"c8fa014336c82ac7804f0398fcb19387": "EuroSAT.zip (torchvision)"}
DOWNLOAD_URL = ("https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
                "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip")
ARCHIVE_NAMES = ("EuroSAT_RGB.zip", "EuroSAT.zip")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}
COMPLETE_MARKER = ".complete.json"
CACHE_FORMAT = 1


class DataError(RuntimeError):
    """Bad or missing data; the message names the file and the fix."""


class DataNotFoundError(DataError, FileNotFoundError):
    """EuroSAT is neither unpacked nor available as a local archive."""


# ----------------------------------------------------------------------------- locating

def eurosat_root(data_dir_: str | os.PathLike | None = None) -> Path:
    """Where the unpacked class folders live: ``<data dir>/eurosat/2750``."""
    return data_dir(data_dir_) / "eurosat" / "2750"


def _has_class_folders(root: Path) -> bool:
    return root.is_dir() and all((root / c).is_dir() for c in EUROSAT_CLASSES)


def candidate_archives(data_dir_: str | os.PathLike | None = None,
                       archive: str | os.PathLike | None = None) -> list[Path]:
    """Archive paths that are looked at, in order."""
    base = data_dir(data_dir_)
    out: list[Path] = []
    if archive is not None:
        out.append(Path(archive).expanduser())
    if os.environ.get(ARCHIVE_ENV):
        out.append(Path(os.environ[ARCHIVE_ENV]).expanduser())
    out += [base / n for n in ARCHIVE_NAMES] + [base / "eurosat" / n for n in ARCHIVE_NAMES]
    return out


def find_eurosat(data_dir_: str | os.PathLike | None = None, *, archive: str | os.PathLike | None = None,
                 allow_download: bool | None = None, verify: bool = True) -> Path:
    """Return the folder holding EuroSAT's 10 class folders, extracting or downloading if needed.

    Args:
        data_dir_: Data folder (default ``$TL_DATA_DIR`` or ``<repo>/data``).
        archive: A specific archive to use. If given and missing, that is an error.
        allow_download: Permit torchvision's download (default ``$TL_ALLOW_DOWNLOAD``).
        verify: Check the archive's checksum against the known releases.

    Raises:
        DataNotFoundError: nothing found and downloads are off.
        DataError: the archive is corrupt, truncated or laid out unexpectedly.
    """
    root = eurosat_root(data_dir_)
    if archive is None and _has_class_folders(root):
        return root
    if archive is not None and not Path(archive).expanduser().is_file():
        raise DataNotFoundError(f"Archive {archive} does not exist. Fix: pass the path of EuroSAT_RGB.zip.")
    for candidate in candidate_archives(data_dir_, archive):
        if candidate.is_file():
            if _has_class_folders(root):
                return root
            extract_archive(candidate, root, verify=verify)
            return root
    if downloads_allowed(allow_download):
        target = data_dir(data_dir_) / "eurosat" / "EuroSAT.zip"
        from torchvision.datasets.utils import download_url

        download_url(DOWNLOAD_URL, str(target.parent), filename=target.name, md5=next(iter(KNOWN_MD5)))
        extract_archive(target, root, verify=verify)
        return root
    from tl_helpers.getting_data import eurosat_missing_message

    raise DataNotFoundError(eurosat_missing_message(data_dir_, [root, *candidate_archives(data_dir_, archive)],
                                                    url=DOWNLOAD_URL, md5=next(iter(KNOWN_MD5))))


def verify_archive(path: str | os.PathLike) -> str:
    """Check an archive's size-independent checksum against the known releases.

    Returns:
        The archive's sha256.

    Raises:
        DataError: unknown checksum (corrupt, truncated or a different file).
    """
    path = Path(path)
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    if sha.hexdigest() in KNOWN_SHA256 or md5.hexdigest() in KNOWN_MD5:
        return sha.hexdigest()
    raise DataError(
        f"Archive {path} has sha256 {sha.hexdigest()}, which matches no known EuroSAT release "
        f"(expected {next(iter(KNOWN_SHA256))} for EuroSAT_RGB.zip). It is probably truncated or "
        "corrupt. Fix: delete it and copy/download it again (or pass verify=False / --no-verify "
        "if you deliberately use a modified archive)."
    )


def _archive_layout(zf: zipfile.ZipFile, path: Path) -> tuple[str, list[zipfile.ZipInfo]]:
    """Find the folder prefix that holds the class folders; return it and the image members."""
    prefixes: dict[str, set[str]] = {}
    pattern = re.compile(r"^((?:[^/]+/)*)([^/]+)/[^/]+$")
    for name in zf.namelist():
        m = pattern.match(name)
        if m and m[2] in EUROSAT_CLASSES:
            prefixes.setdefault(m[1], set()).add(m[2])
    complete = [p for p, classes in prefixes.items() if len(classes) == len(EUROSAT_CLASSES)]
    if len(complete) != 1:
        raise DataError(
            f"Archive {path} does not have the EuroSAT layout: expected one folder (such as '2750/') "
            f"holding the 10 class folders {', '.join(EUROSAT_CLASSES)}. "
            "Fix: use the original EuroSAT_RGB.zip / EuroSAT.zip."
        )
    prefix = complete[0]
    members = []
    for info in zf.infolist():
        rel = info.filename[len(prefix):] if info.filename.startswith(prefix) else None
        if rel is None or info.is_dir():
            continue
        parts = rel.split("/")
        if len(parts) == 2 and parts[0] in EUROSAT_CLASSES and parts[1] not in ("", ".", ".."):
            members.append(info)
    return prefix, members


def extract_archive(path: str | os.PathLike, root: str | os.PathLike, *, verify: bool = True) -> Path:
    """Verify and extract an archive to ``root`` atomically.

    Files are extracted into a temporary sibling folder, which is renamed to
    ``root`` only after every member was read and CRC-checked. On any failure
    the temporary folder is deleted, so no half-extracted dataset is left.
    """
    path, root = Path(path), Path(root)
    archive_sha = verify_archive(path) if verify else None
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root.parent))
    except OSError as exc:
        raise DataError(f"Cannot write into {root.parent}: {exc.strerror}. Fix: set TL_DATA_DIR to a "
                        "writable folder with ~150 MB free.") from exc
    try:
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"Archive {path} is not a readable zip ({exc}); it is probably truncated. "
                            "Fix: delete it and copy/download it again.") from exc
        with zf:
            prefix, members = _archive_layout(zf, path)
            for info in members:
                rel = info.filename[len(prefix):]
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        (tmp / COMPLETE_MARKER).write_text(json.dumps(
            {"archive": str(path), "sha256": archive_sha, "files": len(members)}))
        try:
            os.rename(tmp, root)
        except OSError:
            if not _has_class_folders(root):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: use its copy
    except zipfile.BadZipFile as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"Archive {path} is corrupt ({exc}). Fix: delete it and copy/download it again.") from exc
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"Extracting {path} into {root.parent} failed: {exc}. Fix: free disk space or set "
                        "TL_DATA_DIR to a writable folder; nothing was left behind.") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


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
            raise DataError(f"Class folder {folder} is missing. Fix: re-extract the archive "
                            f"(delete {root} and run `python -m tl_helpers data prepare`).")
        found = []
        for entry in sorted(folder.iterdir()):
            if entry.suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
                found.append((f"{cls}/{entry.name}", label))
            else:
                skipped.append(str(entry))
        if not found:
            raise DataError(f"Class folder {folder} holds no images. Fix: re-extract the archive "
                            f"(delete {root} and run `python -m tl_helpers data prepare`).")
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
        return sha256_text(*(f"{name}:{path}:{label}" for name in ("train", "val", "test")
                             for path, label in self[name]))


def _natural_key(path: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path))


def make_split(samples: Sequence[Sample], *, train_per_class: int = 500, val_per_class: int = 100,
               test_per_class: int = 300, seed: int = 0) -> Split:
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
            raise DataError(f"Class {label} has {len(files)} images but the split needs {need} "
                            f"({train_per_class}+{val_per_class}+{test_per_class}); lower the per-class counts.")
        order = np.random.default_rng([seed, label]).permutation(len(files))
        chosen = [files[i] for i in order[:need]]
        parts["train"] += [(p, label) for p in chosen[:train_per_class]]
        parts["val"] += [(p, label) for p in chosen[train_per_class:train_per_class + val_per_class]]
        parts["test"] += [(p, label) for p in chosen[train_per_class + val_per_class:]]
    return Split(**parts)


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

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "ImageTensors":
        idx = torch.as_tensor(indices, dtype=torch.long)
        return ImageTensors(self.images[idx], self.labels[idx], [self.files[i] for i in idx.tolist()], self.classes)

    def per_class(self, n: int, seed: int = 0) -> "ImageTensors":
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
        raise DataError(f"Image {path} cannot be decoded ({exc}). Fix: delete this file, or re-extract "
                        "the archive (delete the eurosat/2750 folder and run "
                        "`python -m tl_helpers data prepare`).") from exc
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), converted


def _cache_key(root: Path, samples: Sequence[Sample], size: int) -> str:
    stats = []
    for rel, label in samples:
        st = (root / rel).stat()
        stats.append(f"{rel}|{label}|{st.st_size}|{st.st_mtime_ns}")
    return sha256_text(CACHE_FORMAT, size, *stats)


def decode_samples(root: str | os.PathLike, samples: Sequence[Sample], *, size: int = EUROSAT_IMAGE_SIZE,
                   cache: str | os.PathLike | None = None, name: str = "split", progress: bool = True,
                   classes: Sequence[str] = EUROSAT_CLASSES) -> ImageTensors:
    """Decode images once into a uint8 tensor, cached on disk.

    The cache file is keyed by the file list, sizes, modification times and
    decode settings; a stale, foreign or corrupt cache is rebuilt, never used.

    Args:
        root: Folder the relative paths start from.
        samples: (relative path, label) pairs.
        size: Side length to decode to (EuroSAT is 64).
        cache: Cache folder (``None``: ``cache_dir()``; ``False``-y string not allowed).
        name: Label for the cache file and the progress bar.
        progress: Show a tqdm bar while decoding.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    key = _cache_key(root, samples, size)
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"eurosat-{name}-{size}px-{key[:16]}.pt"
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if (blob.get("key") == key and blob["images"].shape == (len(samples), 3, size, size)
                    and blob["images"].dtype == torch.uint8 and len(blob["files"]) == len(samples)):
                return ImageTensors(blob["images"], blob["labels"], list(blob["files"]), tuple(classes))
            warnings.warn(f"Cache {path} does not match its data; rebuilding it.", stacklevel=2)
        except Exception as exc:  # corrupt / truncated cache file
            warnings.warn(f"Cache {path} is unreadable ({type(exc).__name__}); rebuilding it.", stacklevel=2)
    images = torch.empty((len(samples), 3, size, size), dtype=torch.uint8)
    converted = []
    for i, (rel, _) in enumerate(tqdm(samples, desc=f"decoding {name}", disable=not progress, leave=False)):
        images[i], was_converted = decode_image(root / rel, size)
        if was_converted:
            converted.append(rel)
    if converted:
        warnings.warn(f"Converted {len(converted)} image(s) to {size}x{size} RGB, e.g. {converted[0]}", stacklevel=2)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    files = [rel for rel, _ in samples]
    try:
        atomic_torch_save({"key": key, "images": images, "labels": labels, "files": files}, path)
    except OSError as exc:
        warnings.warn(f"{exc} Continuing without a cache.", stacklevel=2)
    return ImageTensors(images, labels, files, tuple(classes))


def load_eurosat(splits: Sequence[str] = ("train", "val", "test"), *, data_dir_: str | os.PathLike | None = None,
                 seed: int = 0, train_per_class: int = 500, val_per_class: int = 100, test_per_class: int = 300,
                 progress: bool = True) -> dict[str, ImageTensors]:
    """The quick-check split of EuroSAT as pre-decoded tensors (decoded once, then cached).

    Returns:
        ``{"train": ImageTensors, "val": ..., "test": ...}`` for the requested splits.
    """
    root = find_eurosat(data_dir_)
    report = scan_folder(root)
    split = make_split(report.samples, train_per_class=train_per_class, val_per_class=val_per_class,
                       test_per_class=test_per_class, seed=seed)
    folder = cache_dir(data_dir_)
    return {name: decode_samples(root, split[name], cache=folder, name=name, progress=progress) for name in splits}


# ----------------------------------------------------------------------------- loaders

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

    Resizing and normalising whole batches is far cheaper than per image.

    Args:
        mean: Per-channel mean (on the [0, 1] scale) of the pretrained model.
        std: Per-channel std.
        image_size: Output side length (EuroSAT is 64; 96 or 128 can help accuracy).
        interpolation: "bicubic" or "bilinear" (what the weights were trained with).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], image_size: int = 64,
                 interpolation: str = "bicubic"):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.image_size = image_size
        self.interpolation = interpolation

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.stack([b[0] for b in batch])
        labels = torch.stack([b[1] for b in batch])
        return self.transform(images), labels

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``N x 3 x H x W`` to normalised float32 at ``image_size``."""
        x = images.float().div_(255)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode=self.interpolation,
                              align_corners=False, antialias=self.interpolation in ("bilinear", "bicubic"))
            x = x.clamp_(0, 1)
        return x.sub_(self.mean).div_(self.std)


def make_loader(data: ImageTensors, *, batch_size: int = 64, mean: Sequence[float] = (0.5, 0.5, 0.5),
                std: Sequence[float] = (0.5, 0.5, 0.5), image_size: int = 64, interpolation: str = "bicubic",
                train: bool = False, seed: int = 0, device: torch.device | str | None = None,
                num_workers: int = 0) -> DataLoader:
    """A DataLoader over pre-decoded images that is safe in notebooks.

    Args:
        data: Images from :func:`load_eurosat` (or any :class:`ImageTensors`).
        batch_size: Images per batch.
        mean, std, interpolation: The pretrained model's preprocessing
            (:func:`tl_helpers.models.get_preprocessing`).
        image_size: Side length fed to the model.
        train: Shuffle (seeded), augment with flips/90° rotations, drop the last partial batch.
        seed: Seed of the shuffling generator.
        device: Pins host memory when this is a CUDA device.
        num_workers: Worker processes. 0 (the default) never hangs in a notebook;
            raise it only in scripts on machines with spare cores.
    """
    generator = torch.Generator().manual_seed(seed)
    pin = torch.device(device).type == "cuda" if device is not None else False
    dataset = TensorImageDataset(data, augment=random_flip_rot90 if train else None)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train, generator=generator,
                      drop_last=train and len(dataset) > batch_size, num_workers=num_workers,
                      pin_memory=pin, collate_fn=BatchTransform(mean, std, image_size, interpolation),
                      persistent_workers=num_workers > 0)
