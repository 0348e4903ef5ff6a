import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import make_fake_eurosat, zip_folder
from tl_helpers import archive as archive_mod
from tl_helpers import data
from tl_helpers.files import sha256_file


@pytest.fixture
def fake_archive(tmp_path, monkeypatch):
    src = make_fake_eurosat(tmp_path / "src", per_class=6)
    archive = zip_folder(src, tmp_path / "EuroSAT_RGB.zip")
    monkeypatch.setattr(archive_mod, "KNOWN_SHA256", {sha256_file(archive): "fake"})
    return archive


def test_finds_unpacked_folder(isolated_env, fake_root, monkeypatch):
    monkeypatch.setenv("TL_DATA_DIR", str(fake_root.parents[1]))
    assert data.find_eurosat() == fake_root


def test_missing_data_error_says_where_to_put_it(isolated_env, no_network):
    with pytest.raises(data.DataNotFoundError) as info:
        data.find_eurosat()
    message = str(info.value)
    assert "EuroSAT_RGB.zip" in message and str(isolated_env) in message and "TL_EUROSAT_ARCHIVE" in message


def test_archive_is_verified_and_extracted(isolated_env, fake_archive, monkeypatch):
    monkeypatch.setenv("TL_EUROSAT_ARCHIVE", str(fake_archive))
    root = data.find_eurosat()
    assert root == isolated_env / "eurosat" / "2750"
    assert len(data.scan_folder(root).samples) == 60
    assert (root / data.COMPLETE_MARKER).is_file()
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".extract-")]


def test_archive_with_other_top_folder_is_accepted(isolated_env, tmp_path, monkeypatch):
    src = make_fake_eurosat(tmp_path / "src", per_class=3)
    archive = zip_folder(src, tmp_path / "EuroSAT.zip", prefix="EuroSAT_RGB/")
    root = data.find_eurosat(archive=archive, verify=False)
    assert len(data.scan_folder(root).samples) == 30


def test_wrong_checksum_stops_and_leaves_nothing(isolated_env, fake_archive, monkeypatch):
    monkeypatch.setattr(archive_mod, "KNOWN_SHA256", {"0" * 64: "other"})
    with pytest.raises(data.DataError, match="matches no known EuroSAT release"):
        data.find_eurosat(archive=fake_archive)
    # the checksum is checked before anything is written: no class folders, no temporary folder
    assert not (isolated_env / "eurosat").exists()


def test_truncated_archive_stops_and_leaves_nothing(isolated_env, fake_archive):
    truncated = fake_archive.with_name("EuroSAT.zip")
    truncated.write_bytes(fake_archive.read_bytes()[: fake_archive.stat().st_size // 2])
    with pytest.raises(data.DataError, match="truncated|corrupt"):
        data.find_eurosat(archive=truncated, verify=False)
    eurosat = isolated_env / "eurosat"
    assert not (eurosat / "2750").exists() and not list(eurosat.glob(".extract-*"))


def test_unexpected_layout_is_rejected(isolated_env, tmp_path):
    archive = tmp_path / "weird.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images/cat.jpg", b"x")
    with pytest.raises(data.DataError, match="does not have the EuroSAT layout"):
        data.find_eurosat(archive=archive, verify=False)
    assert not (isolated_env / "eurosat" / "2750").exists()


def test_read_only_data_dir_gives_clear_error(tmp_path, fake_archive, monkeypatch):
    if os.geteuid() == 0:
        # root ignores permissions: simulate the failure the kernel would report
        import tempfile

        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    monkeypatch.setenv("TL_DATA_DIR", str(ro))
    with pytest.raises(data.DataError, match="TL_DATA_DIR"):
        data.find_eurosat(archive=fake_archive)


def test_scan_skips_stray_files_and_rejects_empty_class(fake_root):
    (fake_root / "Forest" / "Thumbs.db").write_bytes(b"junk")
    with pytest.warns(UserWarning, match="non-image"):
        report = data.scan_folder(fake_root)
    assert len(report.samples) == 120 and report.skipped[0].endswith("Thumbs.db")
    for f in (fake_root / "River").iterdir():
        f.unlink()
    with pytest.raises(data.DataError, match="River holds no images"):
        data.scan_folder(fake_root)


def test_split_is_balanced_disjoint_and_seeded(fake_root):
    samples = data.scan_folder(fake_root).samples
    split = data.make_split(samples, train_per_class=5, val_per_class=2, test_per_class=4, seed=0)
    assert len(split.train) == 50 and len(split.val) == 20 and len(split.test) == 40
    assert np.bincount([lab for _, lab in split.train]).tolist() == [5] * 10
    names = [set(p for p, _ in split[s]) for s in ("train", "val", "test")]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    again = data.make_split(list(reversed(samples)), train_per_class=5, val_per_class=2, test_per_class=4, seed=0)
    assert again.digest() == split.digest()
    other = data.make_split(samples, train_per_class=5, val_per_class=2, test_per_class=4, seed=1)
    assert other.digest() != split.digest()
    with pytest.raises(data.DataError, match="needs"):
        data.make_split(samples, train_per_class=10, val_per_class=2, test_per_class=4)


def test_decode_cache_is_used_then_invalidated(fake_root, tmp_path):
    samples = data.scan_folder(fake_root).samples
    cache = tmp_path / "cache"
    first = data.decode_samples(fake_root, samples, cache=cache, name="t", progress=False)
    assert first.images.dtype == torch.uint8 and first.images.shape == (120, 3, 64, 64)
    files = list(cache.glob("*.pt"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    second = data.decode_samples(fake_root, samples, cache=cache, name="t", progress=False)
    assert torch.equal(first.images, second.images) and files[0].stat().st_mtime_ns == mtime
    # change one image: a new key, a rebuilt cache
    Image.new("RGB", (64, 64), (1, 2, 3)).save(fake_root / samples[0][0])
    third = data.decode_samples(fake_root, samples, cache=cache, name="t", progress=False)
    assert max(abs(v - t) for v, t in zip(third.images[0, :, 0, 0].tolist(), [1, 2, 3])) <= 2
    assert not torch.equal(third.images[0], first.images[0])


def test_corrupt_cache_is_rebuilt_not_used(fake_root, tmp_path):
    samples = data.scan_folder(fake_root).samples
    cache = tmp_path / "cache"
    good = data.decode_samples(fake_root, samples, cache=cache, name="t", progress=False)
    path = next(cache.glob("*.pt"))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable"):
        again = data.decode_samples(fake_root, samples, cache=cache, name="t", progress=False)
    assert torch.equal(good.images, again.images)


def test_corrupt_jpeg_names_the_file(fake_root, tmp_path):
    samples = data.scan_folder(fake_root).samples
    bad = fake_root / samples[3][0]
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(data.DataError, match=str(bad)):
        data.decode_samples(fake_root, samples, cache=tmp_path / "c", progress=False)
    assert not list((tmp_path / "c").glob("*.pt"))


def test_grayscale_and_rgba_are_converted(fake_root, tmp_path):
    samples = data.scan_folder(fake_root).samples
    Image.new("L", (64, 64), 128).save(fake_root / samples[0][0])
    Image.new("RGBA", (32, 32), (10, 20, 30, 40)).save((fake_root / samples[1][0]).with_suffix(".png"))
    (fake_root / samples[1][0]).unlink()
    samples = data.scan_folder(fake_root).samples
    with pytest.warns(UserWarning, match="Converted 2"):
        out = data.decode_samples(fake_root, samples, cache=tmp_path / "c", progress=False)
    assert out.images.shape[1:] == (3, 64, 64)


def test_disk_full_while_caching_leaves_no_partial_file(fake_root, tmp_path, monkeypatch):
    import errno

    samples = data.scan_folder(fake_root).samples

    def full(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.warns(UserWarning, match="free some disk space"):
        out = data.decode_samples(fake_root, samples, cache=tmp_path / "c", progress=False)
    assert len(out) == 120 and list((tmp_path / "c").iterdir()) == []


def test_loader_batches_are_normalised_augmented_and_seeded(fake_root, tmp_path):
    samples = data.scan_folder(fake_root).samples
    tensors = data.decode_samples(fake_root, samples, cache=tmp_path / "c", progress=False)
    loader = data.make_loader(tensors, batch_size=16, image_size=96, train=True, seed=3)
    assert loader.num_workers == 0 and not loader.pin_memory
    x, y = next(iter(loader))
    assert x.shape == (16, 3, 96, 96) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert -1.01 <= float(x.min()) and float(x.max()) <= 1.01
    loader = data.make_loader(tensors, batch_size=16, image_size=96, train=True, seed=3)
    loader2 = data.make_loader(tensors, batch_size=16, image_size=96, train=True, seed=3)
    torch.manual_seed(0)
    a = next(iter(loader))
    torch.manual_seed(0)
    b = next(iter(loader2))
    assert torch.equal(a[0], b[0])
    evaluation = data.make_loader(tensors, batch_size=50)
    assert torch.equal(next(iter(evaluation))[1], tensors.labels[:50])


def test_loader_augment_can_be_turned_off_while_training(fake_root, tmp_path):
    samples = data.scan_folder(fake_root).samples
    tensors = data.decode_samples(fake_root, samples, cache=tmp_path / "c", progress=False)
    plain = next(iter(data.make_loader(tensors, batch_size=len(tensors), image_size=32)))[0].flatten(1)

    def all_plain(loader):
        torch.manual_seed(0)
        x, _ = next(iter(loader))
        return all(bool((plain == row).all(1).any()) for row in x.flatten(1))

    unaugmented = data.make_loader(tensors, batch_size=len(tensors) - 1, image_size=32, train=True, augment=False)
    assert unaugmented.drop_last and isinstance(unaugmented.sampler, torch.utils.data.RandomSampler)  # still training
    assert all_plain(unaugmented)  # every image exactly as it is
    assert not all_plain(data.make_loader(tensors, batch_size=len(tensors) - 1, image_size=32, train=True))


def test_balanced_loader_draws_every_class_equally_often(fake_root, tmp_path):
    samples = data.scan_folder(fake_root).samples
    tensors = data.decode_samples(fake_root, samples, cache=tmp_path / "c", progress=False)
    labels = tensors.labels.numpy()
    keep = np.concatenate([np.flatnonzero(labels == 0)[:2], np.flatnonzero(labels != 0)])  # class 0: 2 images
    imbalanced = tensors.subset(keep)
    counts = np.bincount(imbalanced.labels.numpy())
    assert counts[0] == 2 and counts[1:].min() >= 5 * counts[0]

    def drawn(loader, epochs):
        out = []
        for epoch in range(epochs):
            loader.generator.manual_seed(epoch)  # what fit() does at the start of every epoch
            out += [y for _, y in loader]
        return torch.cat(out).numpy()

    loader = data.make_loader(imbalanced, batch_size=8, image_size=16, train=True, balanced=True, seed=1)
    assert len(loader) == len(imbalanced) // 8  # an epoch still draws len(data) images
    share = np.bincount(drawn(loader, 40), minlength=len(counts)) / (40 * len(loader) * 8)
    assert np.allclose(share, 1 / len(counts), atol=0.03), share  # about equal, class 0 included
    plain = np.bincount(drawn(data.make_loader(imbalanced, batch_size=8, image_size=16, train=True), 5))
    assert plain[0] / plain.sum() < 0.5 / len(counts)  # without it, class 0 stays rare
    # the epoch seed decides the draws, as it decides the shuffling of a plain loader
    again = data.make_loader(imbalanced, batch_size=8, image_size=16, train=True, balanced=True, seed=1)
    assert np.array_equal(drawn(loader, 2), drawn(again, 2))
    with pytest.raises(ValueError, match="train=True"):
        data.make_loader(imbalanced, balanced=True)


def test_flip_rot90_keeps_content():
    img = torch.arange(3 * 4 * 4, dtype=torch.uint8).view(3, 4, 4)
    torch.manual_seed(0)
    outs = {tuple(data.random_flip_rot90(img).flatten().tolist()) for _ in range(64)}
    assert len(outs) == 8  # the 8 symmetries of a square
    assert all(sorted(o) == sorted(img.flatten().tolist()) for o in outs)


def test_per_class_subset(fake_root, tmp_path):
    tensors = data.decode_samples(fake_root, data.scan_folder(fake_root).samples, cache=tmp_path / "c", progress=False)
    sub = tensors.per_class(3, seed=1)
    assert len(sub) == 30 and torch.bincount(sub.labels).tolist() == [3] * 10
    assert sub.files == tensors.per_class(3, seed=1).files


def test_disk_full_during_extraction_leaves_nothing(isolated_env, fake_archive, monkeypatch):
    import errno
    import shutil

    calls = {"n": 0}
    real_copy = shutil.copyfileobj

    def fill_up(src, dst, *a, **k):
        calls["n"] += 1
        if calls["n"] > 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(shutil, "copyfileobj", fill_up)
    with pytest.raises(data.DataError, match="free disk space"):
        data.find_eurosat(archive=fake_archive)
    eurosat = isolated_env / "eurosat"
    assert not (eurosat / "2750").exists() and not list(eurosat.glob(".extract-*"))


def test_concurrent_extraction_uses_the_winner(isolated_env, fake_archive, monkeypatch):
    """Two processes (e.g. torchrun ranks) extracting at once: the loser keeps the winner's copy."""
    real_rename = os.rename

    def someone_else_won(src, dst):
        if str(dst).endswith("2750"):
            make_fake_eurosat(Path(dst), per_class=2)
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", someone_else_won)
    root = data.find_eurosat(archive=fake_archive)
    assert len(data.scan_folder(root).samples) == 20  # the winner's copy, intact
    assert not list(root.parent.glob(".extract-*"))


def test_per_class_indices_matches_the_notebooks_draw():
    """The helper notebooks 06 and 07 use: one seeded generator, classes in order, sorted indices per class."""
    labels = np.repeat(np.arange(4), 7)[np.random.default_rng(5).permutation(28)]
    idx = data.per_class_indices(labels, 3, seed=2)
    rng = np.random.default_rng(2)
    expected = np.concatenate(
        [np.sort(rng.choice(np.flatnonzero(labels == c), size=3, replace=False)) for c in range(4)]
    )
    assert idx.tolist() == expected.tolist()
    assert np.bincount(labels[idx]).tolist() == [3, 3, 3, 3] and len(set(idx.tolist())) == 12
    assert data.per_class_indices(torch.as_tensor(labels), 3, seed=2).tolist() == idx.tolist()
    assert data.per_class_indices(labels, 3, seed=3).tolist() != idx.tolist()
    assert data.per_class_indices(labels[labels != 1], 2, seed=0).size == 6  # only the classes present
    with pytest.raises(ValueError):
        data.per_class_indices(labels, 8, seed=0)
