"""A learner's image folder with every problem ``adapt`` must survive, for the tests.

Tests import it from here (``from tests.helpers_adapt import make_messy_folder``).
Images are small (40 x 30) except the one large JPEG (6000 x 4000, ``large=True``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["MessyFolder", "make_messy_folder", "noise_image", "write_image"]


@dataclass
class MessyFolder:
    """What :func:`make_messy_folder` wrote and what the inspection should find.

    Attributes:
        root: The folder.
        classes: The class folders, sorted.
        counts: Usable images per class (after dropping duplicates and label conflicts).
        unreadable: Relative path -> a word the reason must contain.
        not_images: Relative paths of non-image files inside class folders.
        ignored: Relative paths of hidden/tool entries and loose files (folders end with ``/``).
        duplicates: Groups of identical files within one class, sorted (the first is kept).
        conflicts: Files with identical content in two classes.
        special: Name -> relative path of the images with a property to check
            (``rgba``, ``grey``, ``palette``, ``palette_t``, ``deep``, ``rotated``, ``large``,
            ``unicode``, ``webp``, ``bmp``, ``tiff``, ``gif``, ``nested``).
    """

    root: Path
    classes: tuple[str, ...]
    counts: dict[str, int]
    unreadable: dict[str, str] = field(default_factory=dict)
    not_images: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    special: dict[str, str] = field(default_factory=dict)

    @property
    def image_files(self) -> int:
        """Files with an image extension inside class folders (each is hashed and decoded or taken from the cache)."""
        usable = sum(self.counts.values())
        dropped = sum(len(g) - 1 for g in self.duplicates)
        return usable + dropped + len(self.conflicts) + len(self.unreadable)


def noise_image(seed: int, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> Image.Image:
    """A seeded random image (distinct seeds give distinct files)."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(array[..., 0] if channels == 1 else array, mode)


def write_image(path: Path, img: Image.Image, **save_args: object) -> Path:
    """Save ``img`` to ``path`` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save_args)
    return path


def _jpeg_bytes(img: Image.Image, **save_args: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **save_args)
    return buf.getvalue()


def make_messy_folder(root: str | Path, *, large: bool = True, solo: bool = True) -> MessyFolder:
    """Write a class-per-folder dataset with every problem the inspection must report.

    Classes: ``cat`` (every format and mode, problems, a nested folder), ``dog`` (plain
    images and one label conflict with ``cat``) and, with ``solo``, ``solo`` (one image:
    too few for the default ``min_per_class``).

    Args:
        root: Where to write (created).
        large: Add ``cat/large.jpg`` (6000 x 4000, about 0.4 s to write).
        solo: Add the one-image class ``solo``.

    Returns:
        The :class:`MessyFolder` with the expected findings.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cat, dog = root / "cat", root / "dog"
    special: dict[str, str] = {}
    seed = 100

    def plain(folder: Path, name: str, **save_args: object) -> str:
        nonlocal seed
        seed += 1
        write_image(folder / name, noise_image(seed), **save_args)
        return (folder / name).relative_to(root).as_posix()

    for i in range(5):
        plain(cat, f"c{i}.png")
        plain(dog, f"d{i}.png")

    # modes
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, 20:, 3] = 255  # left half fully transparent (-> white), right half opaque dark red
    write_image(cat / "rgba.png", Image.fromarray(rgba, "RGBA"))
    special["rgba"] = "cat/rgba.png"
    write_image(cat / "grey.png", noise_image(1, mode="L"))
    special["grey"] = "cat/grey.png"
    write_image(cat / "palette.png", noise_image(2).convert("P", palette=Image.Palette.ADAPTIVE, colors=16))
    special["palette"] = "cat/palette.png"
    pal = Image.new("P", (40, 30), 0)
    pal.putpalette([0, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    pal.paste(1, (20, 0, 40, 30))  # right half blue, left half index 0 = transparent
    write_image(cat / "palette_t.png", pal, transparency=0)
    special["palette_t"] = "cat/palette_t.png"
    deep = np.tile(np.linspace(0, 65535, 40).astype(np.uint16), (30, 1))  # horizontal 16-bit ramp
    write_image(cat / "deep.png", Image.fromarray(deep))
    special["deep"] = "cat/deep.png"

    # EXIF orientation 6: stored 40 x 20, left half red, right half blue; displayed rotated 90 degrees clockwise
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20, 0] = 255
    stored[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    write_image(cat / "rotated.jpg", Image.fromarray(stored), exif=exif.tobytes(), quality=95)
    special["rotated"] = "cat/rotated.jpg"

    if large:
        ramp = Image.linear_gradient("L").resize((6000, 4000))
        big = Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ramp))
        write_image(cat / "large.jpg", big, quality=70)
        special["large"] = "cat/large.jpg"

    # formats, unicode name, nested folder, animated GIF
    special["webp"] = plain(cat, "photo.webp", lossless=True)
    special["bmp"] = plain(cat, "scan.bmp")
    special["tiff"] = plain(cat, "scan.TIFF")
    special["unicode"] = plain(cat, "çà_日本.png")
    special["nested"] = plain(cat / "holiday" / "day1", "beach.png")
    frames = [noise_image(7), noise_image(8)]
    frames[0].save(cat / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    special["gif"] = "cat/anim.gif"

    # duplicate within cat: dup_a kept, dup_b dropped
    plain(cat, "dup_a.png")
    (cat / "dup_b.png").write_bytes((cat / "dup_a.png").read_bytes())
    # the same image in cat and dog: a label conflict, both excluded
    plain(cat, "conflict.png")
    (dog / "conflict_copy.png").write_bytes((cat / "conflict.png").read_bytes())

    # unreadable files
    good = _jpeg_bytes(noise_image(9))
    (cat / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (cat / "empty.jpg").write_bytes(b"")
    (cat / "fake.jpg").write_text("this is not a JPEG\n")
    # non-image files and hidden/tool entries
    (cat / "notes.txt").write_text("cats\n")
    (cat / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (cat / "Thumbs.db").write_bytes(b"\0" * 16)
    write_image(cat / ".ipynb_checkpoints" / "c0-checkpoint.png", noise_image(10))
    write_image(root / "__MACOSX" / "cat" / "._c0.png", noise_image(11))
    write_image(root / ".ipynb_checkpoints" / "x.png", noise_image(12))
    write_image(root / ".hidden_class" / "h.png", noise_image(13))
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (root / "README.txt").write_text("my photos\n")
    write_image(root / "loose.png", noise_image(14))

    counts = {"cat": 5 + 5 + 4 + 1 + 1 + 1 + 1 + int(large), "dog": 5}
    # cat: c0-c4, rgba grey palette palette_t deep, photo.webp scan.bmp scan.TIFF çà_日本.png,
    # holiday/day1/beach.png, anim.gif, dup_a.png, rotated.jpg, large.jpg
    classes = ("cat", "dog")
    if solo:
        plain(root / "solo", "only.png")
        counts["solo"] = 1
        classes = ("cat", "dog", "solo")
    return MessyFolder(
        root=root,
        classes=classes,
        counts=counts,
        unreadable={"cat/empty.jpg": "empty file", "cat/fake.jpg": "not an image", "cat/truncated.jpg": "truncated"},
        not_images=["cat/notes.txt"],
        ignored=sorted(
            [
                ".DS_Store",
                ".hidden_class/",
                ".ipynb_checkpoints/",
                "README.txt",
                "__MACOSX/",
                "cat/.DS_Store",
                "cat/.ipynb_checkpoints/",
                "cat/Thumbs.db",
                "desktop.ini",
                "loose.png",
            ]
        ),
        duplicates=[["cat/dup_a.png", "cat/dup_b.png"]],
        conflicts=["cat/conflict.png", "dog/conflict_copy.png"],
        special=special,
    )
