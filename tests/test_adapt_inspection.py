"""tl_helpers.adapt.inspection: one pass over a learner's folder, every problem reported, decoded once."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers_adapt import MessyFolder, make_messy_folder, noise_image, write_image
from tl_helpers.adapt.inspection import (
    GEOMETRY,
    FolderError,
    ImageDecodeError,
    Inspection,
    cache_file_for,
    inspect_folder,
    load_image,
)
from tl_helpers.data import DataError

SIZE = 32


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[MessyFolder, Inspection]:
    """The messy folder (with the large JPEG and the one-image class), inspected once."""
    base = tmp_path_factory.mktemp("messy")
    folder = make_messy_folder(base / "photos")
    inspection = inspect_folder(folder.root, image_size=SIZE, min_per_class=1, cache=base / "cache", progress=False)
    return folder, inspection


def small_folder(tmp_path: Path) -> MessyFolder:
    return make_messy_folder(tmp_path / "photos", large=False, solo=False)


def inspect(folder: MessyFolder, cache: Path, **kwargs: object) -> Inspection:
    return inspect_folder(folder.root, image_size=SIZE, min_per_class=1, cache=cache, progress=False, **kwargs)


# ----------------------------------------------------------------------------- what is found


def test_messy_folder_findings(messy: tuple[MessyFolder, Inspection]) -> None:
    folder, ins = messy
    assert ins.root == folder.root
    assert ins.classes == folder.classes == ins.data.classes
    assert ins.counts == folder.counts
    assert {rel for rel, _ in ins.unreadable} == set(folder.unreadable)
    for rel, reason in ins.unreadable:
        assert folder.unreadable[rel] in reason
    assert ins.not_images == folder.not_images
    assert sorted(ins.ignored) == folder.ignored
    assert ins.duplicates == folder.duplicates
    assert len(ins.conflicts) == 1
    assert ins.conflicts[0]["files"] == folder.conflicts
    assert ins.conflicts[0]["classes"] == ["cat", "dog"]
    assert ins.exif_rotated == 1
    assert set(ins.formats) == {"BMP", "GIF", "JPEG", "PNG", "TIFF", "WEBP"}
    assert {"I;16", "L", "P", "RGB", "RGBA"} <= set(ins.modes)
    assert ins.sizes["width"]["max"] == 6000 and ins.sizes["height"]["max"] == 4000
    assert ins.decoded + ins.from_cache == folder.image_files


def test_usable_data_is_deduplicated_sorted_and_aligned(messy: tuple[MessyFolder, Inspection]) -> None:
    folder, ins = messy
    data = ins.data
    n = sum(folder.counts.values())
    assert data.images.shape == (n, 3, SIZE, SIZE) and data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64 and len(data.files) == len(ins.sha256) == n
    keys = [(int(label), rel) for label, rel in zip(data.labels, data.files)]
    assert keys == sorted(keys)
    for label, rel in keys:
        assert rel.split("/", 1)[0] == ins.classes[label]
    assert len(set(ins.sha256)) == n  # no content twice
    dropped = {rel for group in folder.duplicates for rel in group[1:]} | set(folder.conflicts)
    assert not dropped & set(data.files)
    assert "cat/dup_a.png" in data.files
    for name in ("unicode", "nested", "webp", "bmp", "tiff", "gif", "large", "rotated"):
        assert folder.special[name] in data.files
    assert not any(part.startswith(".") or part == "__MACOSX" for rel in data.files for part in rel.split("/"))


def test_summary_is_json_ready(messy: tuple[MessyFolder, Inspection]) -> None:
    folder, ins = messy
    summary = json.loads(json.dumps(ins.summary(), ensure_ascii=False))
    assert summary["counts"] == folder.counts
    assert summary["total"] == len(ins.data)
    assert summary["files_seen"] == folder.image_files
    assert summary["geometry"] == GEOMETRY
    assert {u["file"] for u in summary["unreadable"]} == set(folder.unreadable)
    assert summary["conflicts"][0]["files"] == folder.conflicts
    assert {"decoded", "from_cache", "seconds", "sizes", "formats", "modes", "exif_rotated"} <= set(summary)


def test_problems_text_names_every_problem_file(messy: tuple[MessyFolder, Inspection]) -> None:
    folder, ins = messy
    text = "\n".join(ins.problems_text())
    problem_files = [
        *folder.unreadable,
        *folder.not_images,
        *folder.ignored,
        *(rel for group in folder.duplicates for rel in group),
        *folder.conflicts,
    ]
    for rel in problem_files:
        assert rel in text, rel
    assert "cat/truncated.jpg: cannot decode (truncated file)" in text
    assert "cat/notes.txt: not an image (extension .txt)" in text


# ----------------------------------------------------------------------------- decoding


def test_decoded_modes_look_right(messy: tuple[MessyFolder, Inspection]) -> None:
    folder, ins = messy
    image = {rel: ins.data.images[i] for i, rel in enumerate(ins.data.files)}
    rgba = image[folder.special["rgba"]].int()  # left half transparent -> white; right half (200, 0, 0)
    assert (rgba[:, :, :2] >= 250).all()
    assert (rgba[0, :, -2:] - 200).abs().max() <= 3 and rgba[1:, :, -2:].max() <= 3
    pal = image[folder.special["palette_t"]].int()  # left half transparent -> white; right half blue
    assert (pal[:, :, :2] == 255).all()
    assert (pal[:2, :, -2:] == 0).all() and (pal[2, :, -2:] == 255).all()
    grey = image[folder.special["grey"]]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    deep = image[folder.special["deep"]][0, 0].int()  # 16-bit left-to-right ramp over 0..65535
    assert deep[0] <= 45 and deep[-1] >= 210 and (deep.diff() >= 0).all()
    for name in ("webp", "bmp", "tiff", "gif", "unicode", "palette"):
        assert image[folder.special[name]].float().std() > 10, name  # noise, not a blank frame


def test_exif_orientation_is_honoured(messy: tuple[MessyFolder, Inspection]) -> None:
    folder, ins = messy
    path = folder.root / folder.special["rotated"]
    got = load_image(path, SIZE)
    assert torch.equal(got, ins.data.images[ins.data.files.index(folder.special["rotated"])])
    # reference: the stored pixels rotated by hand (orientation 6 = 90 degrees clockwise), saved losslessly
    with Image.open(path) as img:
        upright = img.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    assert upright.size == (20, 40)
    reference = write_image(path.parent.parent.parent / "rotated_reference.png", upright)
    assert torch.equal(got, load_image(reference, SIZE))
    top, bottom = got[:, 2].float().mean(1), got[:, -3].float().mean(1)  # red was left, so it is now on top
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_large_image_decodes_to_size(messy: tuple[MessyFolder, Inspection]) -> None:
    folder, _ = messy
    got = load_image(folder.root / folder.special["large"], 64)
    assert got.shape == (3, 64, 64) and got.dtype == torch.uint8
    assert got[0, 0, 32] + 100 < got[0, -1, 32]  # red ramps up top to bottom (not a rotated or blank image)


def test_geometry_is_shorter_side_then_centre_crop(tmp_path: Path) -> None:
    array = np.zeros((20, 60, 3), np.uint8)  # 60 wide, 20 high: thirds red, green, blue
    array[:, :20, 0] = array[:, 20:40, 1] = array[:, 40:, 2] = 255
    path = write_image(tmp_path / "wide.png", Image.fromarray(array))
    got = load_image(path, 20)
    assert got.shape == (3, 20, 20)
    assert (got[1, :, 3:-3] == 255).all() and got[0, :, 3:-3].max() == 0  # only the green centre remains


def test_deep_and_float_images(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 1, 30, dtype=np.float32), (30, 1))
    f_path = write_image(tmp_path / "float.tif", Image.fromarray(ramp, "F"))
    got = load_image(f_path, 30)[0, 0].int()
    assert got[0] <= 10 and got[-1] >= 245 and (got.diff() >= 0).all()
    wide = np.tile(np.linspace(-1000, 1000, 30, dtype=np.float32), (30, 1))  # outside 0..1: min-max
    got = load_image(write_image(tmp_path / "wide.tif", Image.fromarray(wide, "F")), 30)[0, 0].int()
    assert got[0] <= 10 and got[-1] >= 245


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.jpg", b"", "empty file"),
        ("fake.jpg", b"hello, I am text\n", "not an image"),
        ("fake.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, ""),
    ],
)
def test_load_image_errors_name_the_file(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match="cannot decode") as info:
        load_image(path, SIZE)
    assert isinstance(info.value, DataError)
    assert str(path) in str(info.value) and "Fix:" in str(info.value)
    assert reason in info.value.reason


def test_truncated_jpeg_is_an_error_not_grey(messy: tuple[MessyFolder, Inspection]) -> None:
    folder, _ = messy
    with pytest.raises(ImageDecodeError, match=r"truncated file"):
        load_image(folder.root / "cat" / "truncated.jpg", SIZE)
    with pytest.raises(ImageDecodeError, match="cannot read"):
        load_image(folder.root / "cat" / "missing.jpg", SIZE)


def test_decompression_bomb_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_image(tmp_path / "bomb.png", noise_image(0, size=(100, 100)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels > twice the limit
    with pytest.raises(ImageDecodeError, match="too many pixels"):
        load_image(path, SIZE)


# ----------------------------------------------------------------------------- the folder cannot be used


def test_too_few_images_names_every_short_class(messy: tuple[MessyFolder, Inspection], tmp_path: Path) -> None:
    folder, _ = messy
    with pytest.raises(FolderError) as info:
        inspect_folder(folder.root, image_size=SIZE, cache=tmp_path, progress=False)  # default min_per_class=5
    message = str(info.value)
    assert "'solo': 1 usable image" in message and "'cat'" not in message and "'dog'" not in message
    assert "--min-per-class" in message
    assert info.value.inspection is not None and info.value.inspection.counts["solo"] == 1
    with pytest.raises(FolderError) as info:
        inspect_folder(folder.root, image_size=SIZE, min_per_class=6, cache=tmp_path, progress=False)
    message = str(info.value)
    assert "'solo': 1" in message and "'dog': 5" in message and "more unusable" in message  # dog lost its conflict


def test_unusable_folders(tmp_path: Path) -> None:
    with pytest.raises(FolderError, match="does not exist"):
        inspect_folder(tmp_path / "nope", cache=tmp_path, progress=False)
    (tmp_path / "photos.zip").write_bytes(b"PK")
    with pytest.raises(FolderError, match="extract it first"):
        inspect_folder(tmp_path / "photos.zip", cache=tmp_path, progress=False)
    loose = tmp_path / "loose"
    write_image(loose / "a.jpg", noise_image(0))
    with pytest.raises(FolderError, match=r"no class sub-folders \(1 image"):
        inspect_folder(loose, cache=tmp_path, progress=False)
    outer = tmp_path / "outer"
    for cls in ("cat", "dog"):
        write_image(outer / "dataset" / cls / "a.png", noise_image(1))
    with pytest.raises(FolderError, match=r"only one class.*pass that folder instead"):
        inspect_folder(outer, cache=tmp_path, progress=False)
    with pytest.raises(ValueError, match="min_per_class"):
        inspect_folder(outer / "dataset", min_per_class=0, cache=tmp_path, progress=False)


# ----------------------------------------------------------------------------- the decode cache


def test_second_run_decodes_nothing_and_a_changed_file_is_noticed(tmp_path: Path) -> None:
    folder = small_folder(tmp_path)
    n = folder.image_files
    first = inspect(folder, tmp_path / "cache")
    assert (first.decoded, first.from_cache) == (n, 0)
    assert first.cache_file == cache_file_for(folder.root, SIZE, tmp_path / "cache") and first.cache_file.is_file()
    second = inspect(folder, tmp_path / "cache")
    assert (second.decoded, second.from_cache) == (0, n)
    assert torch.equal(first.data.images, second.data.images) and first.data.files == second.data.files
    assert first.unreadable == second.unreadable and first.summary()["sizes"] == second.summary()["sizes"]

    write_image(folder.root / "cat" / "c0.png", noise_image(999))  # same name, new content
    third = inspect(folder, tmp_path / "cache")
    assert (third.decoded, third.from_cache) == (1, n - 1)
    index = third.data.files.index("cat/c0.png")
    assert not torch.equal(third.data.images[index], first.data.images[index])
    assert third.sha256[index] != first.sha256[index]


def test_default_cache_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TL_CACHE_DIR", str(tmp_path / "tl-cache"))
    path = cache_file_for(tmp_path / "photos", 64)
    assert path.parent == tmp_path / "tl-cache" / "adapt" and path.name.endswith("-64px.pt")
    assert cache_file_for(tmp_path / "photos", 32) != path
    assert cache_file_for(tmp_path / "other", 64) != path


@pytest.mark.parametrize("content", ["garbage", "foreign"])
def test_corrupt_or_foreign_cache_is_rebuilt(tmp_path: Path, content: str) -> None:
    folder = small_folder(tmp_path)
    cache_file = cache_file_for(folder.root, SIZE, tmp_path / "cache")
    cache_file.parent.mkdir(parents=True)
    if content == "garbage":
        cache_file.write_bytes(b"not a torch file at all")
    else:
        torch.save({"weights": torch.zeros(3)}, cache_file)
    with pytest.warns(UserWarning, match="rebuilding it"):
        first = inspect(folder, tmp_path / "cache")
    assert first.decoded == folder.image_files
    second = inspect(folder, tmp_path / "cache")
    assert (second.decoded, second.from_cache) == (0, folder.image_files)


def test_unwritable_cache_warns_but_works(tmp_path: Path) -> None:
    folder = small_folder(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="Continuing without the decode cache"):
        ins = inspect(folder, blocker / "cache")
    assert ins.counts == folder.counts and ins.decoded == folder.image_files


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_read_only_cache_folder_warns_but_works(tmp_path: Path) -> None:
    folder = small_folder(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        with pytest.warns(UserWarning, match="Continuing without the decode cache"):
            ins = inspect(folder, cache)
    finally:
        cache.chmod(0o755)
    assert ins.counts == folder.counts


@pytest.mark.filterwarnings("error")
def test_deterministic_and_quiet(tmp_path: Path) -> None:
    folder = small_folder(tmp_path)
    a = inspect(folder, tmp_path / "cache-a")
    copy = tmp_path / "copy"
    shutil.copytree(folder.root, copy)
    b = inspect_folder(copy, image_size=SIZE, min_per_class=1, cache=tmp_path / "cache-b", progress=True)
    assert a.data.files == b.data.files and a.sha256 == b.sha256 and a.classes == b.classes
    assert torch.equal(a.data.images, b.data.images) and torch.equal(a.data.labels, b.data.labels)
    assert a.problems_text() == b.problems_text()
    assert b.decoded == folder.image_files  # another folder: its own cache file
