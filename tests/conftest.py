"""Shared fixtures: tiny fake EuroSAT folders, the real archive, and a network block.

The plain helpers they use live in :mod:`tests.helpers`; tests import from there, never from here.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.helpers import SHARED_ARCHIVE, NetworkBlocked, make_fake_eurosat, real_archive

# Submission fixtures are notebooks for the grader (some hang or exit on purpose): never collect them with nbval.
collect_ignore = ["fixtures"]


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    return make_fake_eurosat(tmp_path / "eurosat" / "2750")


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every course path at a temp folder; no archive, no downloads."""
    monkeypatch.setenv("TL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("TL_CACHE_DIR", raising=False)
    monkeypatch.delenv("TL_EUROSAT_ARCHIVE", raising=False)
    monkeypatch.delenv("TL_ALLOW_DOWNLOAD", raising=False)
    return tmp_path / "data"


@pytest.fixture(scope="session")
def real_eurosat_archive() -> Path:
    archive = real_archive()
    if archive is None:
        message = f"real EuroSAT archive not found (set TL_EUROSAT_ARCHIVE or provide {SHARED_ARCHIVE})"
        if os.environ.get("TL_REQUIRE_REAL_DATA"):
            pytest.fail(message)
        pytest.skip(message)
    return archive


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection raises."""

    def refuse(*args, **kwargs):
        raise NetworkBlocked(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
