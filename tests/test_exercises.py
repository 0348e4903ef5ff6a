"""The exercise generator: solutions/ is the single source; exercises/ must match what it generates."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from tl_helpers import exercises
from tl_helpers.checks import ASSIGNMENTS, CHECKS, total_points
from tl_helpers.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_strip_solution_keeps_indentation_and_hint():
    source = (
        "def f(x):\n    ### BEGIN SOLUTION\n    # HINT: square it\n    return x * x\n    ### END SOLUTION\n"
        "y = 1\n### BEGIN SOLUTION\nz = 2\n### END SOLUTION"
    )
    out = exercises.strip_solution(source)
    assert "return x * x" not in out and "z = 2" not in out
    assert "    raise NotImplementedError('square it')" in out
    assert f"raise NotImplementedError({exercises.DEFAULT_HINT!r})" in out
    assert "y = 1" in out
    compile(out, "cell", "exec")


@pytest.mark.parametrize(
    "bad",
    [
        "### BEGIN SOLUTION\nx = 1",
        "x = 1\n### END SOLUTION",
        "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",
    ],
)
def test_broken_markers_are_reported(bad):
    with pytest.raises(exercises.SolutionMarkupError):
        exercises.strip_solution(bad)


def test_committed_exercises_are_up_to_date():
    assert exercises.differences() == []


def test_exercises_hide_every_solution_and_stay_valid():
    for path in sorted((REPO / "solutions").glob("*.ipynb")):
        solution = nbformat.read(path, as_version=4)
        exercise = nbformat.read(REPO / "exercises" / path.name, as_version=4)
        nbformat.validate(exercise)
        text = json.dumps(exercise.cells)
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
        assert "NotImplementedError" in text
        for cell in exercise.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
                compile(cell.source, path.name, "exec")
        assert exercise.metadata.kernelspec.name == "python3"
        assert len(exercise.cells) == len(solution.cells)


def test_solutions_stored_clean_and_cover_topics():
    stems = sorted(p.stem for p in (REPO / "solutions").glob("*.ipynb"))
    assert stems == sorted(ASSIGNMENTS)
    assert [s[:2] for s in stems] == ["02", "03", "04", "05", "06", "08"]
    graded = [c for spec in ASSIGNMENTS.values() for c in spec]
    assert len(graded) >= 12 and all(CHECKS[cid].points > 0 for _, cid, _ in graded)
    for stem, spec in ASSIGNMENTS.items():
        nb = nbformat.read(REPO / "solutions" / f"{stem}.ipynb", as_version=4)
        source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")
        for _, cid, names in spec:  # each graded check has a check(...) cell on the same variables
            assert f'check("{cid}", {", ".join(names)})' in source, (stem, cid)
        assert total_points(stem) > 0


def test_cli_check_fails_on_stale_exercises(tmp_path, monkeypatch, capsys):
    sol, ex = tmp_path / "solutions", tmp_path / "exercises"
    sol.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")]
    nbformat.write(nb, sol / "09_x_exercises.ipynb")
    monkeypatch.setattr(exercises, "REPO_ROOT", tmp_path)
    assert main(["exercises", "check"]) == 1
    assert "missing" in capsys.readouterr().err
    assert main(["exercises", "build"]) == 0
    assert main(["exercises", "check"]) == 0
    (ex / "09_x_exercises.ipynb").write_text((ex / "09_x_exercises.ipynb").read_text().replace("YOUR", "MY"))
    assert main(["exercises", "check"]) == 1
    (ex / "10_orphan_exercises.ipynb").write_text((ex / "09_x_exercises.ipynb").read_text())
    assert main(["exercises", "check"]) == 1
    assert "has no solutions" in capsys.readouterr().err
