"""Example folders for ``adapt``: a real data set written as ``<class>/<image>.png``, with real-world problems.

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence: 28 x 28 grey photos of Zalando's clothing,
10 classes) is a data set the rest of the course does not classify. Its test part (10,000 images) is
read from Debian's ``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``), from
``$TL_FASHION_MNIST_DIR``, from the course's data folder, or downloaded there when downloads are allowed;
every copy is checked against the checksums of the uncompressed files.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np

from tl_helpers.archive import DataNotFoundError
from tl_helpers.paths import ALLOW_DOWNLOAD_ENV, data_dir, downloads_allowed

__all__ = [
    "FASHION_CLASSES",
    "FASHION_DIR_ENV",
    "FASHION_FILES",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "write_example_folder",
]

FASHION_DIR_ENV = "TL_FASHION_MNIST_DIR"
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
# file -> sha256 of its *uncompressed* content (Debian re-compresses the upstream .gz files)
FASHION_FILES = {
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def _candidates() -> list[Path]:
    env = os.environ.get(FASHION_DIR_ENV)
    return ([Path(env).expanduser()] if env else []) + [DEBIAN_DIR, data_dir() / "fashion-mnist"]


def _read_checked(path: Path) -> bytes:
    raw = gzip.decompress(path.read_bytes())
    if hashlib.sha256(raw).hexdigest() != FASHION_FILES[path.name]:
        raise DataNotFoundError(
            f"{path} is not the Fashion-MNIST file it is named after (checksum differs). "
            f"Fix: delete it and install Debian's dataset-fashion-mnist, or set {FASHION_DIR_ENV} to a good copy."
        )
    return raw


def find_fashion_mnist(*, allow_download: bool | None = None) -> Path:
    """The folder holding Fashion-MNIST's test files (downloading them into the data folder if allowed).

    Raises:
        DataNotFoundError: not found and downloads are off; the message says the ways to get it.
    """
    looked = []
    for folder in _candidates():
        if folder and all((folder / name).is_file() for name in FASHION_FILES):
            return folder
        looked.append(str(folder))
    if downloads_allowed(allow_download):
        target = data_dir() / "fashion-mnist"
        target.mkdir(parents=True, exist_ok=True)
        for name in FASHION_FILES:
            tmp = target / f".{name}.part"
            with urllib.request.urlopen(FASHION_URL + name, timeout=60) as response, open(tmp, "wb") as f:
                shutil.copyfileobj(response, f)
            os.replace(tmp, target / name)
            _read_checked(target / name)
        return target
    raise DataNotFoundError(
        "Fashion-MNIST (the example data of notebook 09) was not found. Looked at: "
        + ", ".join(looked)
        + ". Fix: on Debian/Ubuntu `sudo apt install dataset-fashion-mnist`; or put "
        + " and ".join(FASHION_FILES)
        + f" in a folder and set {FASHION_DIR_ENV} to it; or set {ALLOW_DOWNLOAD_ENV}=1 to download them "
        + f"(about 4.4 MB) from {FASHION_URL}."
    )


def load_fashion_mnist(*, allow_download: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's 10,000 test images (uint8 ``N x 28 x 28``) and labels (see :data:`FASHION_CLASSES`)."""
    folder = find_fashion_mnist(allow_download=allow_download)
    images = _read_checked(folder / "t10k-images-idx3-ubyte.gz")
    labels = _read_checked(folder / "t10k-labels-idx1-ubyte.gz")
    X = np.frombuffer(images, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    y = np.frombuffer(labels, dtype=np.uint8, offset=8).astype(np.int64)
    return X, y


def write_example_folder(
    dest: str | os.PathLike,
    *,
    classes: tuple[str, ...] = ("t-shirt", "pullover", "shirt", "sneaker", "bag"),
    per_class: int = 80,
    seed: int = 0,
    problems: bool = True,
    allow_download: bool | None = None,
) -> dict[str, list[str]]:
    """Write ``per_class`` Fashion-MNIST images of each class as ``dest/<class>/<n>.png`` (seeded choice).

    With ``problems``, it also writes what real folders contain: a copy of one image filed under a second
    class (a label conflict), an exact duplicate within a class, a truncated PNG, an empty file, a text
    file, and a ``.ipynb_checkpoints`` folder. ``dest`` is replaced.

    Returns:
        What was planted: ``{"conflict": [...], "duplicate": [...], "unreadable": [...], "ignored": [...]}``
        (relative paths).
    """
    from PIL import Image

    X, y = load_fashion_mnist(allow_download=allow_download)
    unknown = [c for c in classes if c not in FASHION_CLASSES]
    if unknown:
        raise ValueError(f"unknown Fashion-MNIST classes {unknown}; choose from {FASHION_CLASSES}")
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    rng = np.random.default_rng(seed)
    written: dict[str, list[str]] = {}
    for name in classes:
        label = FASHION_CLASSES.index(name)
        chosen = np.sort(rng.choice(np.flatnonzero(y == label), size=per_class, replace=False))
        (dest / name).mkdir(parents=True)
        written[name] = []
        for i in chosen:
            rel = f"{name}/{int(i):05d}.png"
            Image.fromarray(X[i], mode="L").save(dest / rel)
            written[name].append(rel)
    planted: dict[str, list[str]] = {"conflict": [], "duplicate": [], "unreadable": [], "ignored": []}
    if not problems:
        return planted
    a, b = classes[0], classes[2] if len(classes) > 2 else classes[1]
    source = written[a][0]
    shutil.copyfile(dest / source, dest / b / "copied-from-elsewhere.png")
    planted["conflict"] = [source, f"{b}/copied-from-elsewhere.png"]
    dup = written[classes[1]][0]
    shutil.copyfile(dest / dup, dest / classes[1] / "same-photo-again.png")
    planted["duplicate"] = [dup, f"{classes[1]}/same-photo-again.png"]
    buffer = io.BytesIO()
    Image.fromarray(X[0], mode="L").save(buffer, format="PNG")
    (dest / classes[-1] / "half-copied.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (dest / classes[-1] / "empty.png").write_bytes(b"")
    (dest / classes[1] / "notes.txt").write_text("photographed on the 3rd\n")
    planted["unreadable"] = [f"{classes[-1]}/half-copied.png", f"{classes[-1]}/empty.png", f"{classes[1]}/notes.txt"]
    (dest / classes[0] / ".ipynb_checkpoints").mkdir()
    shutil.copyfile(dest / written[classes[0]][1], dest / classes[0] / ".ipynb_checkpoints" / "copy.png")
    planted["ignored"] = [f"{classes[0]}/.ipynb_checkpoints"]
    return planted
