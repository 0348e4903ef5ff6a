"""Repository-wide pytest hooks.

They live here, not in ``tests/conftest.py``: pytest calls a sub-directory conftest's per-item
hooks only for items under that directory, so hooks there never see ``notebooks/*.ipynb``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent

_notebook_results: dict[str, bool] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb") and report.when == "call":
        _notebook_results[path] = _notebook_results.get(path, True) and report.passed


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With TL_REQUIRE_ALL_NOTEBOOKS=1, fail unless every notebook on disk ran and passed."""
    if not os.environ.get("TL_REQUIRE_ALL_NOTEBOOKS"):
        return
    on_disk = sorted(str(p.relative_to(REPO)) for p in (REPO / "notebooks").glob("*.ipynb"))
    ran = sorted(p for p, ok in _notebook_results.items() if ok)
    if ran != on_disk:
        missing = sorted(set(on_disk) - set(ran))
        print(
            f"\nNOTEBOOK CHECK FAILED: {len(ran)} of {len(on_disk)} notebooks ran and passed; "
            f"not run or failed: {missing}"
        )
        session.exitstatus = 1
    else:
        print(f"\nnotebook check: all {len(on_disk)} notebooks executed and passed")


# nbval waits only 5 s (hard-coded ``output_timeout``) for a cell's remaining output messages after
# the cell finished; on a busy 2-core machine, after a minute of training with progress bars, that
# occasionally fails a cell that ran fine ("Timeout of 5 seconds exceeded waiting for output";
# computationalmodelling/nbval#136, #231). The cell's own time limit stays --nbval-cell-timeout.
NBVAL_OUTPUT_TIMEOUT_S = 120


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S
