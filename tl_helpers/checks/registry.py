"""The exercises: one record per exercise, under the one id a learner sees everywhere.

An exercise's id is what the learner types in ``check("freeze_backbone", model)`` and
``hint("freeze_backbone")``, what the solution's ``# EXERCISE: freeze_backbone`` line and the released
placeholder name, and the gradebook's column. Its record says which check function it runs (several
exercises may share one, e.g. ``replace_head`` and ``replace_head_resnet``), its three hint steps, and
(filled in by :mod:`.table`) which variables it grades in which exercise notebook. Topic modules declare
their exercises with :func:`exercise` next to their checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tl_helpers.checks.core import CHECKS, CheckResult, run_check
from tl_helpers.checks.hints import Hint, register_hints, unknown_id

__all__ = ["EXERCISES", "Exercise", "check", "exercise", "get_exercise", "graded_in"]


@dataclass(frozen=True)
class Exercise:
    """One exercise: its id, the check function it runs, its hints and where it is graded.

    Attributes:
        id: the id learners type in ``check(...)`` and ``hint(...)``; the gradebook column.
        check: the id of the check function in :data:`~tl_helpers.checks.core.CHECKS` it runs.
        hints: its three hint steps.
        notebooks: exercise notebook stem -> the notebook variables passed to the check there
            (one entry per notebook that grades it; filled in by :mod:`.table`).
    """

    id: str
    check: str
    hints: Hint = field(repr=False)
    notebooks: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def points(self) -> int:
        """The points the exercise is worth: its check function's."""
        return CHECKS[self.check].points

    @property
    def description(self) -> str:
        """What a passing answer does (its check function's description)."""
        return CHECKS[self.check].description


EXERCISES: dict[str, Exercise] = {}


def exercise(id: str, idea: str, where: str, code: str, *, check: str | None = None) -> Exercise:
    """Declare an exercise: the check function it runs and its three hint steps (topic modules, at import).

    Args:
        id: the exercise id (also the hint id and the gradebook column); unique.
        idea: hint step 1, what has to be true when the task is done.
        where: hint step 2, where to look.
        code: hint step 3, something close to code.
        check: the id of the check function it runs; by default the exercise's own id. An exercise whose
            id is a check function's id must run that function.

    Raises:
        ValueError: the id is taken, names another check function, or a hint step is empty.
    """
    check = check or id
    if id in EXERCISES:
        raise ValueError(f"exercise {id!r} is declared twice")
    if id in CHECKS and check != id:
        raise ValueError(f"exercise {id!r} is also a check function's id, so it must run that check, not {check!r}")
    EXERCISES[id] = Exercise(id, check, register_hints(id, idea, where, code))
    return EXERCISES[id]


def get_exercise(id: str) -> Exercise:
    """The exercise named ``id``.

    Raises:
        KeyError: no exercise has that id; the message lists the valid ids, the closest first.
    """
    if id not in EXERCISES:
        raise unknown_id(id, EXERCISES)
    return EXERCISES[id]


def graded_in(notebook: str, id: str, variables: tuple[str, ...]) -> Exercise:
    """Record that ``notebook`` grades exercise ``id`` on ``variables`` (called by :mod:`.table`).

    Raises:
        KeyError: no exercise has that id.
        ValueError: its check function is not registered, or the notebook grades it twice.
    """
    record = get_exercise(id)
    if record.check not in CHECKS:
        raise ValueError(f"exercise {id!r} runs check {record.check!r}, which is not registered")
    if notebook in record.notebooks:
        raise ValueError(f"{notebook} grades exercise {id!r} twice")
    record.notebooks[notebook] = tuple(variables)
    return record


def check(id: str, *objects: Any) -> CheckResult:
    """Check an exercise and print ✅ or ❌ with a specific hint. Never raises on a wrong answer.

    Args:
        id: the exercise id, e.g. ``"freeze_backbone"`` (the one ``hint(...)`` takes).
        *objects: the notebook objects the exercise grades, e.g. the model.

    Raises:
        KeyError: ``id`` is not an exercise (a typo in the notebook); the message lists the valid ids.
    """
    record = get_exercise(id)
    result = run_check(record.check, *objects)
    mark = "✅" if result.passed else "❌"
    print(f"{mark} {id} ({record.points if result.passed else 0}/{record.points} points): {result.feedback}")
    return result
