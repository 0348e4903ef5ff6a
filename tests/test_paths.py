from pathlib import Path

import pytest

from tl_helpers import paths


@pytest.fixture
def clean_env(monkeypatch):
    for name in (paths.DATA_DIR_ENV, paths.CACHE_DIR_ENV, paths.ALLOW_DOWNLOAD_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_data_dir_argument_then_env_then_checkout(clean_env, tmp_path):
    assert paths.data_dir() == paths.REPO_ROOT / "data"  # tests run from a checkout
    clean_env.setenv(paths.DATA_DIR_ENV, str(tmp_path / "env"))
    assert paths.data_dir() == tmp_path / "env"
    assert paths.data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert paths.data_dir("~/x") == Path.home() / "x"


def test_data_dir_outside_a_checkout(clean_env, tmp_path):
    clean_env.setattr(paths, "REPO_ROOT", tmp_path / "site-packages")
    assert paths.data_dir() == Path.home() / ".cache" / "tl-course"


def test_cache_dir_env_or_under_the_data_dir(clean_env, tmp_path):
    assert paths.cache_dir(tmp_path) == tmp_path / "cache"
    clean_env.setenv(paths.DATA_DIR_ENV, str(tmp_path / "d"))
    assert paths.cache_dir() == tmp_path / "d" / "cache"
    clean_env.setenv(paths.CACHE_DIR_ENV, str(tmp_path / "c"))
    assert paths.cache_dir() == tmp_path / "c" and paths.cache_dir(tmp_path) == tmp_path / "c"


@pytest.mark.parametrize(
    "value,allowed",
    [("1", True), ("true", True), (" YES ", True), ("on", True), ("0", False), ("", False), ("no", False)],
)
def test_downloads_allowed_env(clean_env, value, allowed):
    assert paths.downloads_allowed() is False
    clean_env.setenv(paths.ALLOW_DOWNLOAD_ENV, value)
    assert paths.downloads_allowed() is allowed
    assert paths.downloads_allowed(True) is True and paths.downloads_allowed(False) is False


def test_paths_are_read_at_call_time_not_import_time(clean_env, tmp_path):
    first = paths.data_dir()
    clean_env.setenv(paths.DATA_DIR_ENV, str(tmp_path))
    assert paths.data_dir() == tmp_path != first
