"""The EuroSAT RGB archive: find it offline, verify its checksum, extract it atomically.

Lookup order used by :func:`find_eurosat`:

1. an unpacked folder ``<data dir>/eurosat/2750/<Class>/*.jpg``;
2. a local archive: the ``archive`` argument, ``$TL_EUROSAT_ARCHIVE``, or
   ``EuroSAT_RGB.zip`` / ``EuroSAT.zip`` in the data dir (or its ``eurosat/``);
   it is checksum-verified, then extracted into a temporary folder that is
   renamed into place only when complete;
3. torchvision's download URL, only when downloads are allowed
   (``TL_ALLOW_DOWNLOAD=1`` or ``allow_download=True``);
4. otherwise :class:`DataNotFoundError` saying where to put the archive.

A wrong checksum, a truncated or wrongly laid out archive stop with one error
naming the file and the fix; nothing is left half-extracted.
:mod:`tl_helpers.data` re-exports every public name of this module.

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
import zipfile
from pathlib import Path

from tl_helpers.paths import ARCHIVE_ENV, data_dir, downloads_allowed

__all__ = [
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
]

EUROSAT_CLASSES: tuple[str, ...] = (
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
)
EUROSAT_NUM_IMAGES = 27_000
EUROSAT_IMAGE_SIZE = 64
# sha256 of known-good archives (the full RGB release as shipped here).
KNOWN_SHA256 = {"c2c32f2142d694c77e0952b21986a642660499ce5fa00a3be8779c2bd96da50e": "EuroSAT_RGB.zip"}
# torchvision's download (EuroSAT.zip) is published with an md5.
KNOWN_MD5 = {"c8fa014336c82ac7804f0398fcb19387": "EuroSAT.zip (torchvision)"}
DOWNLOAD_URL = (
    "https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip"
)
ARCHIVE_NAMES = ("EuroSAT_RGB.zip", "EuroSAT.zip")
COMPLETE_MARKER = ".complete.json"


class DataError(RuntimeError):
    """Bad or missing data; the message names the file and the fix."""


class DataNotFoundError(DataError, FileNotFoundError):
    """EuroSAT is neither unpacked nor available as a local archive."""


# ----------------------------------------------------------------------------- locating


def eurosat_root(data_dir_: str | os.PathLike | None = None) -> Path:
    """Where the unpacked class folders live: ``<data dir>/eurosat/2750``."""
    return data_dir(data_dir_) / "eurosat" / "2750"


def has_class_folders(root: Path) -> bool:
    """Whether ``root`` holds a folder for each of the 10 EuroSAT classes."""
    return root.is_dir() and all((root / c).is_dir() for c in EUROSAT_CLASSES)


def candidate_archives(
    data_dir_: str | os.PathLike | None = None, archive: str | os.PathLike | None = None
) -> list[Path]:
    """Archive paths that are looked at, in order."""
    base = data_dir(data_dir_)
    out: list[Path] = []
    if archive is not None:
        out.append(Path(archive).expanduser())
    if os.environ.get(ARCHIVE_ENV):
        out.append(Path(os.environ[ARCHIVE_ENV]).expanduser())
    out += [base / n for n in ARCHIVE_NAMES] + [base / "eurosat" / n for n in ARCHIVE_NAMES]
    return out


def find_eurosat(
    data_dir_: str | os.PathLike | None = None,
    *,
    archive: str | os.PathLike | None = None,
    allow_download: bool | None = None,
    verify: bool = True,
) -> Path:
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
    if archive is None and has_class_folders(root):
        return root
    if archive is not None and not Path(archive).expanduser().is_file():
        raise DataNotFoundError(f"Archive {archive} does not exist. Fix: pass the path of EuroSAT_RGB.zip.")
    for candidate in candidate_archives(data_dir_, archive):
        if candidate.is_file():
            if has_class_folders(root):
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

    raise DataNotFoundError(
        eurosat_missing_message(
            data_dir_, [root, *candidate_archives(data_dir_, archive)], url=DOWNLOAD_URL, md5=next(iter(KNOWN_MD5))
        )
    )


def verify_archive(path: str | os.PathLike) -> str:
    """Check an archive's sha256 (or md5, for torchvision's download) against the known releases.

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
        rel = info.filename[len(prefix) :] if info.filename.startswith(prefix) else None
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
        raise DataError(
            f"Cannot write into {root.parent}: {exc.strerror}. Fix: set TL_DATA_DIR to a "
            "writable folder with ~150 MB free."
        ) from exc
    try:
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(
                f"Archive {path} is not a readable zip ({exc}); it is probably truncated. "
                "Fix: delete it and copy/download it again."
            ) from exc
        with zf:
            prefix, members = _archive_layout(zf, path)
            for info in members:
                rel = info.filename[len(prefix) :]
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        (tmp / COMPLETE_MARKER).write_text(
            json.dumps({"archive": str(path), "sha256": archive_sha, "files": len(members)})
        )
        try:
            os.rename(tmp, root)
        except OSError:
            if not has_class_folders(root):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first: use its copy
    except zipfile.BadZipFile as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"Archive {path} is corrupt ({exc}). Fix: delete it and copy/download it again.") from exc
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(
            f"Extracting {path} into {root.parent} failed: {exc}. Fix: free disk space or set "
            "TL_DATA_DIR to a writable folder; nothing was left behind."
        ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
