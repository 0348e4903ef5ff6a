"""Shared fixtures: tiny fake EuroSAT folders, the real archive, and a network block; the markers' rules.

``@pytest.mark.real_data`` (EuroSAT; ``real_data("sst2")`` or ``real_data("eurosat", "sst2")`` to name
the data sets) skips a test with the setting to make when the data is missing, and fails it instead
when ``TL_REQUIRE_REAL_DATA=1``. ``@pytest.mark.requires_cuda`` skips without a CUDA GPU, and fails
instead when ``TL_REQUIRE_CUDA=1``.

The plain helpers they use live in :mod:`tests.helpers`; tests import from there, never from here.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests import helpers
from tests.helpers import NetworkBlocked, make_fake_eurosat

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


def _required(env: str) -> bool:
    """Whether ``env`` is set to something other than empty or ``0``."""
    return os.environ.get(env, "") not in ("", "0")


def _skip_or_fail(reason: str, env: str) -> None:
    """Skip with ``reason``, or fail with it when ``env`` (e.g. TL_REQUIRE_REAL_DATA) is set."""
    if _required(env):
        pytest.fail(f"{reason}; {env}=1 turns this skip into a failure", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(tryfirst=True)  # before skipif: a `requires_cuda` test must fail under TL_REQUIRE_CUDA=1
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Apply the ``real_data`` and ``requires_cuda`` markers (see the module docstring)."""
    for marker in item.iter_markers("real_data"):
        for kind in marker.args or ("eurosat",):
            try:
                reason = helpers.missing_real_data(kind)
            except ValueError as exc:
                pytest.fail(f"@pytest.mark.real_data: {exc}", pytrace=False)
            if reason is not None:
                _skip_or_fail(reason, "TL_REQUIRE_REAL_DATA")
    if item.get_closest_marker("requires_cuda") is not None and not helpers.cuda_available():
        _skip_or_fail("needs a CUDA GPU (torch.cuda.is_available() is False)", "TL_REQUIRE_CUDA")


@pytest.fixture(scope="session")
def real_eurosat_archive() -> Path:
    """The real EuroSAT archive; skips (or fails under TL_REQUIRE_REAL_DATA=1) when it is missing."""
    reason = helpers.missing_real_data("eurosat")
    if reason is not None:
        _skip_or_fail(reason, "TL_REQUIRE_REAL_DATA")
    archive = helpers.real_archive()
    assert archive is not None
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
