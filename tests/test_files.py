import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tl_helpers import files


def test_sha256_file_and_text(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    assert files.sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert files.sha256_file(f, chunk_size=1) == files.sha256_file(f)
    assert files.sha256_text("a", 1) == files.sha256_text("a", "1")
    assert files.sha256_text("ab", "c") != files.sha256_text("a", "bc")


def test_tensor_digest_depends_on_values_dtype_and_shape():
    x = torch.arange(12, dtype=torch.uint8).view(3, 4)
    assert files.tensor_digest(x) == files.tensor_digest(x.clone())
    assert files.tensor_digest(x) == files.tensor_digest(x.numpy())  # torch and NumPy agree
    assert files.tensor_digest(x.t().contiguous().t()) == files.tensor_digest(x)  # layout does not matter
    assert files.tensor_digest(x.t()) != files.tensor_digest(x)  # the transpose is other content
    other = x.clone()
    other[2, 3] += 1
    assert files.tensor_digest(other) != files.tensor_digest(x)
    assert files.tensor_digest(x.view(4, 3)) != files.tensor_digest(x)
    assert files.tensor_digest(x.to(torch.int8)) != files.tensor_digest(x)
    assert files.tensor_digest(x, x) != files.tensor_digest(x)
    assert files.tensor_digest(x[:1], x[1:]) != files.tensor_digest(x[:2], x[2:])
    assert files.tensor_digest(torch.zeros(0)) != files.tensor_digest(torch.zeros(0, 3))
    assert files.tensor_digest(torch.ones(2, dtype=torch.bfloat16)) != files.tensor_digest(torch.ones(2))
    with pytest.raises(TypeError):
        files.tensor_digest([1, 2, 3])
    with pytest.raises(TypeError):
        files.tensor_digest(np.array([object()]))


def test_atomic_torch_save_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "x.pt"
    files.atomic_torch_save({"a": torch.ones(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))

    def full(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(files.CacheWriteError, match="free some disk space"):
        files.atomic_torch_save({"a": torch.zeros(2)}, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.pt"]
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.ones(2))  # the old file is intact


class Builder:
    def __init__(self, value):
        self.value, self.calls = value, 0

    def __call__(self):
        self.calls += 1
        return self.value


def test_load_or_build_missing_then_hit(tmp_path, recwarn):
    path = tmp_path / "c" / "entry.pt"
    build = Builder({"X": torch.arange(3), "names": ["a", "b"]})
    first = files.load_or_build(path, "k1", build)
    assert build.calls == 1 and path.is_file()
    assert torch.load(path, weights_only=True)["key"] == "k1"
    again = files.load_or_build(path, "k1", Builder(None))
    assert torch.equal(again["X"], first["X"]) and again["names"] == ["a", "b"]
    assert not recwarn.list


def test_load_or_build_stale_key_rebuilds_and_replaces(tmp_path):
    path = tmp_path / "entry.pt"
    files.load_or_build(path, "old", Builder(torch.zeros(2)))
    build = Builder(torch.ones(2))
    assert torch.equal(files.load_or_build(path, "new", build), torch.ones(2)) and build.calls == 1
    assert torch.load(path, weights_only=True)["key"] == "new"
    # a file in another format (no "value") is stale too, never returned
    torch.save({"key": "new", "X": torch.zeros(2)}, path)
    assert torch.equal(files.load_or_build(path, "new", Builder(torch.full((2,), 7.0))), torch.full((2,), 7.0))


@pytest.mark.parametrize("content", [b"broken", b""])
def test_load_or_build_corrupt_file_warns_and_rebuilds(tmp_path, content):
    path = tmp_path / "entry.pt"
    files.load_or_build(path, "k", Builder(torch.arange(100)))
    path.write_bytes(path.read_bytes()[:50] if content == b"" else content)
    build = Builder(torch.arange(100))
    with pytest.warns(UserWarning, match="feature cache .* is unreadable"):
        value = files.load_or_build(path, "k", build, what="feature cache")
    assert torch.equal(value, torch.arange(100)) and build.calls == 1
    assert torch.equal(files.load_or_build(path, "k", Builder(None)), torch.arange(100))  # rewritten


def test_load_or_build_unwritable_warns_and_returns_the_value(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root ignores permissions: simulate what the kernel would report

        def refuse(*a, **k):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    folder.chmod(0o555)
    try:
        with pytest.warns(UserWarning, match="tensor cache") as record:
            value = files.load_or_build(folder / "entry.pt", "k", Builder([1, 2]), what="tensor cache")
        assert value == [1, 2]
        assert "TL_CACHE_DIR" in str(record[0].message)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_load_or_build_does_not_swallow_build_errors(tmp_path):
    def boom():
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        files.load_or_build(tmp_path / "entry.pt", "k", boom)
    assert not list(tmp_path.iterdir())
