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


def pytest_configure(config: pytest.Config) -> None:
    """Give this run the course's kernel environment (``tl_helpers.runner.KERNEL_ENV``) unless it sets its own.

    nbval's kernels (``--nbval-current-env``) inherit this process's environment, and libgomp reads the
    variables only when torch loads: this hook runs before any test module (or torch) is imported. Where
    several pytest-xdist workers keep the CPUs busy at once (``make test TEST_JOBS=2``), waiting threads do
    not spin at all (``NO_SPIN_ENV``): the workers, the grader's kernels they start and the notebooks'.
    """
    from tl_helpers.runner import KERNEL_ENV, NO_SPIN_ENV  # torch-free

    env = dict(KERNEL_ENV)
    if _several_workers(config):
        env.update(NO_SPIN_ENV)
    for name, value in env.items():
        os.environ.setdefault(name, value)


def _several_workers(config: pytest.Config) -> bool:
    """Whether this session runs on more than one pytest-xdist worker (asked in the controller or a worker)."""
    if hasattr(config, "workerinput"):
        return _xdist_workers(config) > 1
    workers = getattr(config.option, "numprocesses", None)  # the controller of `-n N`
    return bool(workers) and workers != 1


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb") and report.when == "call":
        _notebook_results[path] = _notebook_results.get(path, True) and report.passed


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With TL_REQUIRE_ALL_NOTEBOOKS=1, fail unless every notebook on disk ran and passed.

    Under pytest-xdist each worker saves the notebooks it ran; the check runs once, in the controller, which
    receives every worker's reports.
    """
    _save_executed_notebooks()
    if not os.environ.get("TL_REQUIRE_ALL_NOTEBOOKS") or hasattr(session.config, "workerinput"):
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


# `make test TEST_JOBS=2` (CI sets it) runs the unit tests first (on two workers), then the notebooks on two workers
# (`--dist loadscope --no-loadscope-reorder`: a notebook's cells stay together on one worker, in order), each
# notebook's kernel with one compute thread, so that two kernels share the two cores without starving each other's
# OpenMP threads. The notebooks are queued longest first and a worker takes the next one when it is nearly done with
# its own. The seconds below: each notebook's cells under nbval, one thread, two notebooks at a time as above, on a
# 2-core AMD EPYC with AVX2 only (2026-12-07, with tl_helpers.depthwise and .pointwise and fused AdamW; 03, 06, 08,
# 10 and 11 scaled from their longest cells); a notebook missing here counts as
# NOTEBOOK_SECONDS_DEFAULT (a test asks for every notebook). Two one-thread training loops side by side processed
# 1.14-1.41x the images of one two-thread loop alone (a 2-core Intel Xeon). A notebook computes slightly different
# numbers with one thread than with two (as it does on another CPU, or with four threads); its asserts hold on each.
NOTEBOOK_SECONDS = {
    "00_setup_check": 8,
    "01_pretrained_models": 41,
    "02_feature_extraction": 147,
    "03_freezing": 143,
    "04_replacing_the_head": 68,
    "05_fine_tuning_low_lr": 459,
    "06_capstone_quick_check": 466,
    "07_when_transfer_helps": 798,
    "08_transfer_in_language": 257,
    "09_your_own_images": 107,
    "10_choosing_the_source": 292,
    "11_language_fine_tuning_on_equal_terms": 502,
}
NOTEBOOK_SECONDS_DEFAULT = 300


def longest_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """The items with the notebooks' cells queued longest notebook first, each notebook's cells in their order.

    Other items keep their place ahead of the notebooks.
    """

    def cost(item: pytest.Item) -> float:
        return NOTEBOOK_SECONDS.get(Path(str(item.path)).stem, NOTEBOOK_SECONDS_DEFAULT)

    cells = [item for item in items if hasattr(item, "output_timeout")]
    others = [item for item in items if not hasattr(item, "output_timeout")]
    # sorted() is stable: a notebook's cells keep their order, and notebooks of equal cost their collection order
    return others + sorted(cells, key=lambda item: (-cost(item), str(item.path)))


def _xdist_workers(config: pytest.Config) -> int:
    """How many pytest-xdist workers run this session's tests (1 without xdist)."""
    if hasattr(config, "workerinput"):  # this process is a worker
        return max(1, int(config.workerinput["workercount"]))
    return 1


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = NBVAL_OUTPUT_TIMEOUT_S
    if _xdist_workers(config) > 1:
        items[:] = longest_first(items)


# With TL_SAVE_EXECUTED=<folder>, every notebook whose cells all ran and passed is also written to
# <folder>/<name>.ipynb with the outputs nbval received, so that `make site` renders this one
# execution instead of running the notebooks again (see docs/site/executed.py). This only reads
# what nbval recorded after each cell's test; it changes nothing in how the notebooks are tested.
# Under pytest-xdist each worker writes the notebooks it ran.
_executed_outputs: dict[str, dict] = {}


# With TL_TEST_NOTEBOOK_WAIT_POLICY=<policy> (for a machine that runs the notebooks one at a time, alone), the
# notebooks' kernels start with that OMP_WAIT_POLICY instead of the course's PASSIVE. Sleeping threads cost a kernel
# alone little at 64 px but more on the small images of notebooks 05 and 07 (a 48 px training loop measured 193
# against 143 img/s, ACTIVE against PASSIVE, on a 2-core Intel Xeon, and level on another day). Only the notebook
# kernels: the grader's kernels, which the tests run two at a time, keep PASSIVE. The numbers a notebook computes do
# not change. With TEST_JOBS=2 each kernel has one thread and the policy has nothing to act on.
NOTEBOOK_WAIT_POLICY = "TL_TEST_NOTEBOOK_WAIT_POLICY"


def notebook_kernel_threads(config: pytest.Config) -> int | None:
    """Compute threads of a notebook's kernel when several xdist workers share the CPUs (``None``: its own choice)."""
    workers = _xdist_workers(config)
    if workers <= 1:
        return None
    from tl_helpers.device import available_cpus  # imports torch: only on a worker, after pytest_configure set its env

    return max(1, available_cpus() // workers)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """Notebook kernels start in this setup (nbval starts one per notebook with its first cell).

    With TL_SAVE_EXECUTED they start without MPLBACKEND (CI exports Agg), as a learner's kernel does, so
    figures are shown inline and kept in the executed copies; with TL_TEST_NOTEBOOK_WAIT_POLICY they get
    that OMP_WAIT_POLICY. The environment is restored afterwards.
    """
    saved: dict[str, str | None] = {}
    if hasattr(item, "test_outputs"):
        if os.environ.get("TL_SAVE_EXECUTED"):
            saved["MPLBACKEND"] = os.environ.pop("MPLBACKEND", None)
        policy = os.environ.get(NOTEBOOK_WAIT_POLICY)
        if policy:
            saved["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY")
            os.environ["OMP_WAIT_POLICY"] = policy
        threads = notebook_kernel_threads(item.config)
        if threads:
            from tl_helpers.runner import THREAD_VARIABLES  # torch-free

            for name in THREAD_VARIABLES:
                saved[name] = os.environ.get(name)
                os.environ[name] = str(threads)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    if not os.environ.get("TL_SAVE_EXECUTED") or call.when != "call" or not hasattr(item, "test_outputs"):
        return
    path = str(item.path)
    entry = _executed_outputs.setdefault(path, {"cells": {}, "ok": True, "start": call.start})
    report = outcome.get_result()
    entry["ok"] = entry["ok"] and report.passed and item.test_outputs is not None
    entry["cells"][item.cell_num] = list(item.test_outputs or [])
    entry["stop"] = call.stop


def _save_executed_notebooks() -> None:
    folder = os.environ.get("TL_SAVE_EXECUTED")
    if not folder or not _executed_outputs:
        return
    helper = REPO / "docs" / "site" / "executed.py"
    if not helper.is_file():  # e.g. this conftest copied elsewhere by a test
        return
    import importlib.util

    import nbformat

    spec = importlib.util.spec_from_file_location("tl_site_executed", helper)
    executed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(executed)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for path, entry in _executed_outputs.items():
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        if not entry["ok"] or set(entry["cells"]) != set(range(len(code))):
            (out / Path(path).name).unlink(missing_ok=True)
            continue
        for n, cell in enumerate(code):
            cell.outputs = [nbformat.from_dict(dict(o)) for o in entry["cells"][n]]
            cell.execution_count = n + 1
            for o in cell.outputs:
                if o.get("output_type") == "execute_result":
                    o["execution_count"] = n + 1
        nb.metadata[executed.METADATA_KEY] = executed.execution_record(
            Path(path), "pytest --nbval-lax", entry["stop"] - entry["start"], mplbackend=""
        )
        nbformat.write(nb, out / Path(path).name)
