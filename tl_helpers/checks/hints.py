"""Hints on request, step by step: ``hint("freeze_backbone")`` gives the idea, then where to look, then code.

Each exercise declares exactly three steps next to its checks, in its topic module
(:func:`tl_helpers.checks.registry.exercise`), under its one id: the id of its ``check(...)``, its
``# EXERCISE:`` line and its gradebook column:

1. the idea: what has to be true when the task is done;
2. where to look: the attribute, method or API that gets you there (no solution code);
3. something close to code: the shape of the answer, still for the learner to finish.

Every call prints the next step for that exercise and counts it; after the third, the third is
shown again. :func:`hints_used` returns the counts, which the grader records in the gradebook
(asking for a hint costs no points; instructors see how much help each exercise needed).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["HINTS", "Hint", "hint", "hints_used", "register_hints", "reset_hints", "unknown_id"]


@dataclass(frozen=True)
class Hint:
    """The three steps of one exercise's hints."""

    exercise: str
    idea: str
    where: str
    code: str

    @property
    def steps(self) -> tuple[str, str, str]:
        return (self.idea, self.where, self.code)


HINTS: dict[str, Hint] = {}
_USED: dict[str, int] = {}
_LABELS = ("the idea", "where to look", "close to code")


def register_hints(exercise: str, idea: str, where: str, code: str) -> Hint:
    """Register the three hint steps of ``exercise`` (called by :func:`~tl_helpers.checks.registry.exercise`).

    Raises:
        ValueError: a step is empty, or the exercise already has hints.
    """
    if exercise in HINTS:
        raise ValueError(f"hints for {exercise!r} are registered twice")
    if not all(s.strip() for s in (idea, where, code)):
        raise ValueError(f"hints for {exercise!r}: every one of the three steps needs text")
    HINTS[exercise] = Hint(exercise, idea.strip(), where.strip(), code.strip())
    return HINTS[exercise]


def unknown_id(id: str, known: Iterable[str]) -> KeyError:
    """The error for an id that names no exercise: the valid ids, the closest matches first."""
    known = sorted(known)
    close = difflib.get_close_matches(str(id), known, n=3, cutoff=0.5)
    ordered = close + [k for k in known if k not in close]
    guess = f" Did you mean {close[0]!r}?" if close else ""
    return KeyError(f"Unknown exercise {id!r}.{guess} Exercise ids: {', '.join(ordered)}")


def hint(exercise: str) -> str:
    """Print (and return) the next hint step for ``exercise``; the count is kept for the gradebook.

    Raises:
        KeyError: ``exercise`` is not an exercise (a typo); the message lists the valid ids, the closest first.
    """
    if exercise not in HINTS:
        raise unknown_id(exercise, HINTS)
    used = _USED.get(exercise, 0) + 1
    _USED[exercise] = used
    step = min(used, 3)
    text = HINTS[exercise].steps[step - 1]
    more = "" if step < 3 else " (that is the last hint for this exercise)"
    message = f"💡 {exercise}, hint {step}/3 — {_LABELS[step - 1]}{more}:\n{text}"
    print(message)
    return message


def hints_used() -> dict[str, int]:
    """How many times each exercise's hints were asked for in this kernel (exercises never asked: absent)."""
    return dict(_USED)


def reset_hints() -> None:
    """Forget the hint counts (tests; a fresh kernel starts at zero anyway)."""
    _USED.clear()
