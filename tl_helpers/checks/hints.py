"""Hints on request, step by step: ``hint("freeze_backbone")`` gives the idea, then where to look, then code.

Each exercise registers exactly three steps next to its checks (in its topic module):

1. the idea: what has to be true when the task is done;
2. where to look: the attribute, method or API that gets you there (no solution code);
3. something close to code: the shape of the answer, still for the learner to finish.

Every call prints the next step for that exercise and counts it; after the third, the third is
shown again. :func:`hints_used` returns the counts, which the grader records in the gradebook
(asking for a hint costs no points; instructors see how much help each exercise needed).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HINTS", "Hint", "hint", "hints_used", "register_hints", "reset_hints"]


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
    """Register the three hint steps of ``exercise`` (called by the topic modules at import).

    Raises:
        ValueError: a step is empty, or the exercise already has hints.
    """
    if exercise in HINTS:
        raise ValueError(f"hints for {exercise!r} are registered twice")
    if not all(s.strip() for s in (idea, where, code)):
        raise ValueError(f"hints for {exercise!r}: every one of the three steps needs text")
    HINTS[exercise] = Hint(exercise, idea.strip(), where.strip(), code.strip())
    return HINTS[exercise]


def hint(exercise: str) -> str:
    """Print (and return) the next hint step for ``exercise``; the count is kept for the gradebook.

    Raises:
        KeyError: ``exercise`` has no hints (a typo); the message lists the exercises that do.
    """
    if exercise not in HINTS:
        raise KeyError(f"No hints for {exercise!r}. Exercises with hints: {', '.join(sorted(HINTS))}")
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
