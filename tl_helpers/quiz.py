"""Self-check quizzes at the end of a notebook: pick an answer, get feedback at once.

Each question has exactly one correct option, and every option carries a one-line
explanation, shown when it is picked (right or wrong)::

    from tl_helpers.quiz import Option, Question, quiz

    quiz([Question("Why mask the padding?", (
        Option("Padding vectors would be averaged in", True, "Mean pooling must ignore them."),
        Option("It makes the model faster", False, "The mask changes the result, not the speed."),
    ))])

``ipywidgets`` is imported only when a quiz is shown.
"""

from __future__ import annotations

import hashlib
import html
import random
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["Option", "Question", "QuizError", "validate", "answer", "display_order", "quiz"]


class QuizError(ValueError):
    """A question without exactly one correct option, or an option without an explanation."""


@dataclass(frozen=True)
class Option:
    """One answer: its text, whether it is right, and why (shown when picked)."""

    text: str
    correct: bool
    why: str


@dataclass(frozen=True)
class Question:
    """A multiple-choice question."""

    prompt: str
    options: tuple[Option, ...]


def validate(questions: Sequence[Question]) -> None:
    """Raise :class:`QuizError` unless every question has one correct option and every option an explanation."""
    if not questions:
        raise QuizError("A quiz needs at least one question.")
    for number, q in enumerate(questions, start=1):
        if len(q.options) < 2:
            raise QuizError(f"Question {number} ({q.prompt!r}) needs at least two options.")
        right = sum(o.correct for o in q.options)
        if right != 1:
            raise QuizError(f"Question {number} ({q.prompt!r}) has {right} correct options; it needs exactly one.")
        for o in q.options:
            if not o.why.strip():
                raise QuizError(f"Question {number}: option {o.text!r} has no explanation.")
        if len({o.text for o in q.options}) != len(q.options):
            raise QuizError(f"Question {number} ({q.prompt!r}) repeats an option.")


def answer(question: Question, choice: int | str) -> tuple[bool, str]:
    """``(correct, feedback)`` for the option at index ``choice`` (or with that text)."""
    if isinstance(choice, str):
        matches = [i for i, o in enumerate(question.options) if o.text == choice]
        if not matches:
            raise KeyError(f"No option {choice!r} in question {question.prompt!r}")
        choice = matches[0]
    option = question.options[choice]
    return option.correct, ("✅ Right. " if option.correct else "❌ Not quite. ") + option.why


def display_order(question: Question) -> tuple[Option, ...]:
    """The options in the order :func:`quiz` shows them: shuffled, the same order every time.

    Notebooks write the right option wherever it reads best (often first); shown in that order, a learner
    would learn where the answer sits instead of why. The order is seeded by the question's text, so it is
    stable between runs and machines, and every question gets its own.
    """
    seed = int.from_bytes(hashlib.sha256(question.prompt.encode("utf-8")).digest()[:8], "big")
    order = list(range(len(question.options)))
    random.Random(seed).shuffle(order)
    return tuple(question.options[i] for i in order)


def quiz(questions: Sequence[Question], *, title: str = "Self-check") -> Any:
    """The questions as radio buttons (options in :func:`display_order`) with immediate feedback.

    Returns:
        The widget. As the last expression of a cell (how the notebooks call it) Jupyter shows it
        once; elsewhere, pass it to ``IPython.display.display``.
    """
    import ipywidgets as widgets

    validate(questions)
    rows: list[Any] = [widgets.HTML(f"<h3>{title}</h3>")]
    for number, q in enumerate(questions, start=1):
        picker = widgets.RadioButtons(
            options=[o.text for o in display_order(q)], value=None, layout=widgets.Layout(width="auto")
        )
        feedback = widgets.HTML("<i>Pick an answer.</i>")

        def on_pick(change: dict, q: Question = q, feedback: Any = feedback) -> None:
            if change["new"] is not None:
                _, text = answer(q, change["new"])
                feedback.value = html.escape(text)

        picker.observe(on_pick, names="value")
        rows += [widgets.HTML(f"<b>{number}. {html.escape(q.prompt)}</b>"), picker, feedback]
    return widgets.VBox(rows)
