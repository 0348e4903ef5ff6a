"""When EuroSAT is missing, every entry point says exactly how to proceed (download or local copy)."""

from __future__ import annotations

import pytest

from tl_helpers import cli, data
from tl_helpers.getting_data import DOWNLOAD_SIZE


def _says_how_to_proceed(message: str, data_dir) -> None:
    assert "TL_ALLOW_DOWNLOAD=1" in message
    assert DOWNLOAD_SIZE in message and "MB" in DOWNLOAD_SIZE
    assert str(data_dir / "eurosat" / "EuroSAT.zip") in message  # where the download goes
    assert next(iter(data.KNOWN_MD5)) in message and "md5" in message  # the checksum it must match
    assert data.DOWNLOAD_URL in message
    assert str(data_dir / "EuroSAT_RGB.zip") in message and "TL_EUROSAT_ARCHIVE" in message


def test_load_eurosat_names_download_size_destination_and_checksum(isolated_env, no_network):
    with pytest.raises(data.DataNotFoundError) as info:
        data.load_eurosat()
    _says_how_to_proceed(str(info.value), isolated_env)


def test_doctor_names_download_size_destination_and_checksum(isolated_env, no_network, capsys):
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    _says_how_to_proceed(out, isolated_env)
    assert "NOT READY" in out


def test_doctor_with_downloads_allowed_is_ready_for_first_use(isolated_env, no_network, monkeypatch, capsys):
    monkeypatch.setenv("TL_ALLOW_DOWNLOAD", "1")
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "downloaded on first use" in out and "READY" in out
