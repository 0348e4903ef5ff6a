"""`make test TEST_JOBS=2`: the notebooks on two pytest-xdist workers, one compute thread per kernel (root conftest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from tests.helpers import load_root_conftest, nbval_project
from tl_helpers.device import available_cpus
from tl_helpers.runner import THREAD_VARIABLES

REPO = Path(__file__).resolve().parents[1]


class Cell:
    """What the conftest reads from one of nbval's items."""

    output_timeout = 5
    test_outputs = None

    def __init__(self, notebook: str, n: int, workers: int = 1) -> None:
        self.path = Path("notebooks") / f"{notebook}.ipynb"
        self.n = n
        self.config = SimpleNamespace(workerinput={"workercount": workers}) if workers > 1 else SimpleNamespace()

    def __repr__(self) -> str:
        return f"{self.path.stem}:{self.n}"


class UnitTest:
    def __init__(self, name: str) -> None:
        self.path = Path("tests") / f"{name}.py"
        self.config = SimpleNamespace()


def test_every_notebook_on_disk_has_its_measured_seconds():
    conftest = load_root_conftest()
    on_disk = {p.stem for p in (REPO / "notebooks").glob("*.ipynb")}
    assert set(conftest.NOTEBOOK_SECONDS) == on_disk
    assert all(seconds > 0 for seconds in conftest.NOTEBOOK_SECONDS.values())


def test_longest_notebook_first_each_notebooks_cells_in_order():
    conftest = load_root_conftest()
    slow, quick = sorted(conftest.NOTEBOOK_SECONDS, key=conftest.NOTEBOOK_SECONDS.get)[::-1][:1] + ["00_setup_check"]
    items = [Cell(quick, 0), Cell(quick, 1), UnitTest("t"), Cell("99_new", 0), Cell(slow, 0), Cell(slow, 1)]
    ordered = conftest.longest_first(items)
    assert [repr(i) if isinstance(i, Cell) else "unit" for i in ordered] == [
        "unit",
        f"{slow}:0",
        f"{slow}:1",
        "99_new:0",  # an unmeasured notebook counts as NOTEBOOK_SECONDS_DEFAULT
        f"{quick}:0",
        f"{quick}:1",
    ]
    assert conftest.NOTEBOOK_SECONDS[quick] < conftest.NOTEBOOK_SECONDS_DEFAULT < conftest.NOTEBOOK_SECONDS[slow]


def test_the_order_changes_only_on_xdist_workers():
    conftest = load_root_conftest()
    serial = [Cell("00_setup_check", 0), Cell("07_when_transfer_helps", 0)]
    conftest.pytest_collection_modifyitems(SimpleNamespace(), serial)
    assert [i.path.stem for i in serial] == ["00_setup_check", "07_when_transfer_helps"]
    assert all(i.output_timeout == conftest.NBVAL_OUTPUT_TIMEOUT_S for i in serial)
    on_a_worker = [Cell("00_setup_check", 0), Cell("07_when_transfer_helps", 0)]
    conftest.pytest_collection_modifyitems(SimpleNamespace(workerinput={"workercount": 2}), on_a_worker)
    assert [i.path.stem for i in on_a_worker] == ["07_when_transfer_helps", "00_setup_check"]


def _env_during_setup(conftest, item) -> dict[str, str | None]:
    setup = conftest.pytest_runtest_setup(item)
    next(setup)  # nbval starts the notebook's kernel here
    during = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    with pytest.raises(StopIteration):
        setup.send(None)
    return during


def test_two_workers_give_each_kernel_its_share_of_the_cpus_and_restore_the_env(monkeypatch):
    conftest = load_root_conftest()
    monkeypatch.delenv("TL_SAVE_EXECUTED", raising=False)
    monkeypatch.delenv(conftest.NOTEBOOK_WAIT_POLICY, raising=False)
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    share = str(max(1, available_cpus() // 2))
    during = _env_during_setup(conftest, Cell("05_fine_tuning_low_lr", 0, workers=2))
    assert during == dict.fromkeys(THREAD_VARIABLES, share)
    assert all(os.environ.get(name) is None for name in THREAD_VARIABLES)  # restored
    # one worker, or a unit test on a worker: the kernel makes its own choice
    assert set(_env_during_setup(conftest, Cell("05_fine_tuning_low_lr", 0)).values()) == {None}
    unit = UnitTest("t")
    unit.config = SimpleNamespace(workerinput={"workercount": 2})
    assert set(_env_during_setup(conftest, unit).values()) == {None}


def test_make_test_with_two_jobs_runs_the_unit_tests_then_the_notebooks_on_two_workers():
    makefile = (REPO / "Makefile").read_text()
    assert "TEST_JOBS ?= 1" in makefile
    assert "-m pytest tests -n $(TEST_JOBS) $(PYTEST_ARGS) || status=1" in makefile
    assert "-m pytest notebooks $(NBVAL) -n $(TEST_JOBS) --dist loadscope --no-loadscope-reorder" in makefile
    assert "export TEST_JOBS=2" in (REPO / ".ci" / "run").read_text()
    assert any(line.strip().startswith('"pytest-xdist') for line in (REPO / "pyproject.toml").read_text().splitlines())


@pytest.mark.slow
def test_two_workers_run_every_notebook_whole_with_one_thread_and_save_each(tmp_path):
    """End to end: pytest -n 2 over three notebooks; each kernel sees one thread; the check counts all three."""
    nbval_project(tmp_path)
    for name in ("a", "b", "c"):
        cells = [
            nbformat.v4.new_code_cell(f"import os\nstate = '{name}'"),
            nbformat.v4.new_code_cell("import time\ntime.sleep(0.5)\nprint(state, os.environ['OMP_NUM_THREADS'])"),
            nbformat.v4.new_code_cell(f"assert state == '{name}'"),  # fails if a worker ran this cell in a new kernel
        ]
        nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / "notebooks" / f"{name}.ipynb")
    env = {**os.environ, "TL_SAVE_EXECUTED": str(tmp_path / "executed"), "TL_REQUIRE_ALL_NOTEBOOKS": "1"}
    for name in THREAD_VARIABLES:
        env.pop(name, None)
    args = ["-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env", "--rootdir", str(tmp_path)]
    args += ["-n", "2", "--dist", "loadscope", "--no-loadscope-reorder", "notebooks"]
    r = subprocess.run(
        [sys.executable, "-m", "pytest", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "notebook check: all 3 notebooks executed and passed" in r.stdout, r.stdout
    share = str(max(1, available_cpus() // 2))
    for name in ("a", "b", "c"):
        saved = nbformat.read(tmp_path / "executed" / f"{name}.ipynb", as_version=4)
        assert saved.cells[1].outputs[0].text == f"{name} {share}\n"
    # a notebook that fails on a worker fails the run and the check
    bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('broken')")])
    nbformat.write(bad, tmp_path / "notebooks" / "d.ipynb")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode != 0
    assert "NOTEBOOK CHECK FAILED: 3 of 4 notebooks ran and passed" in r.stdout, r.stdout
