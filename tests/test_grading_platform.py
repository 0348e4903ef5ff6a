"""Where the grader runs: it refuses platforms that cannot isolate a submission, and shares out the usable CPUs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import nbformat
import pytest

from tl_helpers import grading, runner
from tl_helpers.cli import main


def submissions(folder: Path, n: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        nbformat.write(nbformat.v4.new_notebook(), folder / f"s{i}_03_freezing_exercises.ipynb")
    return folder


@pytest.mark.parametrize("module,name", [(signal, "SIGALRM"), (signal, "alarm"), (os, "killpg"), (os, "setsid")])
def test_grading_refuses_a_platform_without_signals_or_process_groups(tmp_path, monkeypatch, capsys, module, name):
    folder = submissions(tmp_path / "subs")
    ran = []
    monkeypatch.setattr(grading, "run_isolated", lambda *a, **k: ran.append(a))
    monkeypatch.delattr(module, name)
    expected = f"{'signal' if module is signal else 'os'}.{name}"
    with pytest.raises(grading.GradingUnsupportedError, match="grading needs Linux, macOS or WSL") as err:
        grading.grade([folder], out=tmp_path / "gb.csv", progress=False)
    assert expected in str(err.value)
    with pytest.raises(grading.GradingUnsupportedError):
        grading.grade_notebook(next(folder.glob("*.ipynb")))
    assert main(["grade", str(folder), "--out", str(tmp_path / "gb.csv")]) != 0
    err_text = capsys.readouterr().err
    assert "grading needs Linux, macOS or WSL" in err_text and expected in err_text
    assert not ran and not (tmp_path / "gb.csv").exists()  # nothing ran, no gradebook of zeros


def test_the_runner_refuses_without_process_groups(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "killpg")
    assert runner.isolation_missing() == ["os.killpg"]
    with pytest.raises(RuntimeError, match="Linux, macOS or WSL"):
        runner.run_isolated(tmp_path / "x.ipynb", "", "M:")


def test_this_platform_is_supported():
    grading.check_platform()
    assert runner.isolation_missing() == []


@pytest.mark.parametrize("cpus,jobs,threads", [(4, 2, 2), (2, 4, 1), (16, 3, 5), (8, 1, None)])
def test_jobs_share_out_the_cpus_this_process_may_use(tmp_path, monkeypatch, cpus, jobs, threads):
    folder = submissions(tmp_path / "subs", n=2)
    seen = []
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)  # the machine, not what we may use
    monkeypatch.setattr(grading, "available_cpus", lambda: cpus)
    monkeypatch.setattr(
        grading, "grade_notebook", lambda path, **kw: seen.append(kw["threads"]) or grading.Submission(str(path), None)
    )
    grading.grade([folder], progress=False, jobs=jobs)
    assert seen == [threads, threads]
