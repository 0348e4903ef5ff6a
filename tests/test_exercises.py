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


def test_strip_solution_keeps_indentation_and_names_the_hint():
    source = (
        "def f(x):\n    ### BEGIN SOLUTION\n    # EXERCISE: square\n    return x * x\n    ### END SOLUTION\n"
        "y = 1\n### BEGIN SOLUTION\nz = 2\n### END SOLUTION"
    )
    out = exercises.strip_solution(source)
    assert "return x * x" not in out and "z = 2" not in out and "EXERCISE" not in out
    assert f"    raise NotImplementedError({exercises.placeholder('square')!r})" in out
    assert 'hint("square")' in out
    assert f"raise NotImplementedError({exercises.DEFAULT_HINT!r})" in out
    assert "y = 1" in out
    compile(out, "cell", "exec")


@pytest.mark.parametrize(
    "bad",
    [
        "### BEGIN SOLUTION\nx = 1",
        "x = 1\n### END SOLUTION",
        "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION",
        "### BEGIN SOLUTION\n# HINT: x = 1 would be released\nx = 1\n### END SOLUTION",
        "### BEGIN SOLUTION\n# EXERCISE: a\n# EXERCISE: b\nx = 1\n### END SOLUTION",
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


def _solution_lines(source: str) -> list[str]:
    """The code lines inside the solution regions of a cell (comments and trivial lines left out)."""
    lines, inside = [], False
    for line in source.splitlines():
        s = line.strip()
        if s in (exercises.BEGIN, exercises.END):
            inside = s == exercises.BEGIN
        elif inside and s and not s.startswith("#") and len(s) >= 12:
            lines.append(s)
    return lines


def test_released_exercises_contain_no_answer_line():
    """No code line of a solution region appears anywhere in the released notebook (code, comments, text)."""
    for path in sorted((REPO / "solutions").glob("*.ipynb")):
        solution = nbformat.read(path, as_version=4)
        released = (REPO / "exercises" / path.name).read_text()
        released_sources = "\n".join(c.source for c in nbformat.reads(released, as_version=4).cells)
        given = {line.strip() for c in solution.cells for line in exercises.strip_solution(c.source).splitlines()}
        for cell in solution.cells:
            if cell.cell_type != "code":
                continue
            for line in _solution_lines(cell.source):
                if line in given:  # the same line is also given outside the answers (boilerplate)
                    continue
                released_lines = {x.strip().lstrip("# ") for x in released_sources.splitlines()}
                leaked = line in released_lines or (len(line) >= 25 and line in released_sources)
                assert not leaked, f"{path.name}: the answer line {line!r} is released"


def test_every_exercise_region_names_hints_with_three_steps():
    from tl_helpers.checks import HINTS

    for path in sorted((REPO / "solutions").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        regions = [c.source for c in nb.cells if c.cell_type == "code" and exercises.BEGIN in c.source]
        for source in regions:
            ids = exercises.exercise_ids(source)
            assert ids, f"{path.name}: a solution region without '# EXERCISE: <id>': {source[:80]!r}"
            for exercise in ids:
                assert exercise in HINTS, f"{path.name}: no hints registered for {exercise!r}"
                steps = HINTS[exercise].steps
                assert len(set(steps)) == 3 and all(len(s) > 20 for s in steps), exercise


def test_hint_gives_the_steps_in_order_and_counts(capsys):
    from tl_helpers.checks import hints

    hints.reset_hints()
    name = sorted(hints.HINTS)[0]
    shown = [hints.hint(name) for _ in range(4)]
    for step, text in enumerate(hints.HINTS[name].steps[:3], 1):
        assert f"hint {step}/3" in shown[step - 1] and text in shown[step - 1]
    assert "last hint" in shown[3] and hints.HINTS[name].code in shown[3]
    assert hints.hints_used() == {name: 4}
    with pytest.raises(KeyError, match="Unknown exercise"):
        hints.hint("no_such_exercise")
    hints.reset_hints()


def test_solutions_stored_clean_and_cover_topics():
    stems = sorted(p.stem for p in (REPO / "solutions").glob("*.ipynb"))
    assert stems == sorted(ASSIGNMENTS)
    # one exercise notebook for every course notebook after the setup check, new notebooks included
    lessons = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb") if not p.name.startswith("00_"))
    assert stems == [f"{lesson}_exercises" for lesson in lessons], "add solutions/<notebook>_exercises.ipynb"
    assert [s[:2] for s in stems] == ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11"]
    graded = [c for spec in ASSIGNMENTS.values() for c in spec]
    assert len(graded) >= 12 and all(CHECKS[cid].points > 0 for _, cid, _ in graded)
    for stem, spec in ASSIGNMENTS.items():
        nb = nbformat.read(REPO / "solutions" / f"{stem}.ipynb", as_version=4)
        source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code")
        assert nb.metadata.get("tl_course", {}).get("assignment") == stem, f"solutions/{stem}: tl_course metadata"
        for exercise, _, names in spec:  # each graded exercise has a check(...) cell on the same variables
            assert f'check("{exercise}", {", ".join(names)})' in source, (stem, exercise)
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


def test_time_budgets_are_stated_in_the_notebooks_they_limit():
    """Budgets are stated in work, equal to what the check enforces; no wall-clock budget is promised to
    learners (the grader's wall-clock limit is only a safety net scaled to the grading machine)."""
    import re

    from tl_helpers.checks import outcomes, table

    work_budgets = {"06_capstone_quick_check_exercises": outcomes.BUDGET_IMAGE_PASSES}
    assert table.BUDGETS, "the outcome exercises have safety nets"
    for stem in set(table.BUDGETS) | set(work_budgets):
        assert stem in ASSIGNMENTS, stem
        nb = nbformat.read(REPO / "exercises" / f"{stem}.ipynb", as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        seconds = re.findall(r"\b\d[\d,.]*\s*(?:s|sec|secs|seconds?|min|mins|minutes?)\b", text)
        assert not seconds, f"{stem}: a wall-clock budget is promised to learners: {seconds}"
        if stem in work_budgets:
            stated = re.findall(r"≤\s*\**\s*([\d,]+)\**\s*image passes", text.replace("**", ""))
            assert stated, f"{stem}: the notebook must state its budget in image passes"
            assert {int(x.replace(",", "")) for x in stated} == {work_budgets[stem]}, (stem, stated)


def test_markers_are_the_ones_nbgraders_clear_solutions_strips():
    """nbgrader's ClearSolutions finds regions by its default delimiters, BEGIN SOLUTION / END SOLUTION,
    as a substring of a line: every such line here is exactly a marker, balanced and not nested, so an
    institution's nbgrader strips the same answer regions as our generator (the # EXERCISE: line with them)."""
    for path in sorted((REPO / "solutions").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(nb.cells):
            depth = 0
            for line in cell.source.splitlines():
                if "BEGIN SOLUTION" in line or "END SOLUTION" in line:
                    assert cell.cell_type == "code", f"{path.name} cell {index}: a marker in a {cell.cell_type} cell"
                    assert line.strip() in (exercises.BEGIN, exercises.END), f"{path.name} cell {index}: {line!r}"
                    depth += 1 if line.strip() == exercises.BEGIN else -1
                    assert depth in (0, 1), f"{path.name} cell {index}: nested or unbalanced markers"
                elif exercises.exercise_ids(line):
                    assert depth == 1, f"{path.name} cell {index}: '# EXERCISE:' outside an answer region"
            assert depth == 0, f"{path.name} cell {index}: a region is not closed"
