"""Generate ``exercises/`` from ``solutions/``: ``python -m tl_helpers exercises build | check``.

Every region between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (nbgrader's
markers, so nbgrader's ClearSolutions strips the same regions) is replaced, at the marker's
indentation, by::

    # YOUR CODE HERE
    raise NotImplementedError('Your code here (the task is above). Stuck? hint("freeze_backbone")')

The exercise id comes from the region's ``# EXERCISE: freeze_backbone`` line: the exercise's one id,
also the one its ``check("freeze_backbone", ...)`` cell and its gradebook column use. Its hints live in
the package (:mod:`tl_helpers.checks.registry`), never in the notebook, so the released placeholder
says what to do but never how. A ``# HINT:`` line in a region is an error (it would be released).

Outputs and execution counts are stripped. ``check`` regenerates in memory and
fails (exit 1) when a committed exercise differs from its solution or has no
solution (CI runs it).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from tl_helpers.paths import REPO_ROOT

__all__ = [
    "BEGIN",
    "DEFAULT_HINT",
    "END",
    "SolutionMarkupError",
    "build",
    "differences",
    "expected_exercises",
    "exercise_ids",
    "make_exercise",
    "placeholder",
    "render",
    "strip_solution",
]

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
DEFAULT_HINT = "Write your solution here, then run the check cell below."
_EXERCISE = re.compile(r"^\s*#\s*EXERCISE:\s*([A-Za-z0-9_]+)\s*$")
_HINT = re.compile(r"^\s*#\s*HINT\b")


def placeholder(exercise: str | None) -> str:
    """The message the released stub raises: what to do and how to ask for a hint, never the answer."""
    if not exercise:
        return DEFAULT_HINT
    return f'Your code here (the task is above). Stuck? hint("{exercise}")'


def exercise_ids(source: str) -> list[str]:
    """The ``# EXERCISE: id`` names inside the solution regions of ``source``."""
    return [m.group(1) for m in map(_EXERCISE.match, source.splitlines()) if m]


class SolutionMarkupError(ValueError):
    pass


def strip_solution(source: str, where: str = "cell") -> str:
    """Replace each BEGIN/END SOLUTION region of ``source`` by a stub that raises NotImplementedError."""
    out: list[str] = []
    region: list[str] | None = None
    indent = ""
    for number, line in enumerate(source.splitlines(), 1):
        stripped = line.strip()
        if stripped == BEGIN:
            if region is not None:
                raise SolutionMarkupError(f"{where}, line {number}: nested {BEGIN}")
            region, indent = [], line[: len(line) - len(line.lstrip())]
        elif stripped == END:
            if region is None:
                raise SolutionMarkupError(f"{where}, line {number}: {END} without {BEGIN}")
            if any(_HINT.match(r) for r in region):
                raise SolutionMarkupError(
                    f"{where}, line {number}: a '# HINT:' line inside a solution region would be released "
                    "with the exercise; declare the hint steps with tl_helpers.checks.registry.exercise and "
                    "name the exercise with '# EXERCISE: <id>'"
                )
            ids = [m.group(1) for m in map(_EXERCISE.match, region) if m]
            if len(ids) > 1:
                raise SolutionMarkupError(f"{where}, line {number}: one '# EXERCISE:' line per region, got {ids}")
            message = placeholder(ids[0] if ids else None)
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError({message!r})"]
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    if region is not None:
        raise SolutionMarkupError(f"{where}: {BEGIN} without {END}")
    return "\n".join(out)


def make_exercise(solution: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    nb = nbformat.from_dict(solution)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source = strip_solution(cell.source, f"{name} cell {index + 1}")
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    return nbformat.writes(nb) + ("" if nbformat.writes(nb).endswith("\n") else "\n")


def expected_exercises(solutions: Path) -> dict[str, str]:
    result = {}
    for path in sorted(solutions.glob("*.ipynb")):
        solution = nbformat.read(path, as_version=4)
        result[path.name] = render(make_exercise(solution, path.name))
    return result


def build(solutions: Path | None = None, exercises: Path | None = None) -> list[Path]:
    solutions = solutions or REPO_ROOT / "solutions"
    exercises = exercises or REPO_ROOT / "exercises"
    exercises.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in expected_exercises(solutions).items():
        target = exercises / name
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def differences(solutions: Path | None = None, exercises: Path | None = None) -> list[str]:
    """Problems that ``check`` reports: stale, missing or orphaned exercise notebooks."""
    solutions = solutions or REPO_ROOT / "solutions"
    exercises = exercises or REPO_ROOT / "exercises"
    expected = expected_exercises(solutions)
    problems = []
    for name, text in expected.items():
        target = exercises / name
        if not target.is_file():
            problems.append(f"exercises/{name} is missing")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"exercises/{name} differs from what solutions/{name} generates")
    for path in sorted(exercises.glob("*.ipynb")):
        if path.name not in expected:
            problems.append(f"exercises/{path.name} has no solutions/{path.name}")
    if problems:
        problems.append("Fix: python -m tl_helpers exercises build (then commit exercises/)")
    return problems
