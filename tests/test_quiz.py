"""tl_helpers.quiz, and every quiz in the course notebooks."""

from __future__ import annotations

import builtins
from pathlib import Path

import nbformat
import pytest

from tl_helpers import quiz as quiz_module
from tl_helpers.quiz import Option, Question, QuizError, answer, validate

REPO = Path(__file__).resolve().parents[1]


def q(*options: Option) -> Question:
    return Question("Which?", tuple(options))


def test_validate_accepts_one_correct_option_with_explanations():
    validate([q(Option("a", True, "because"), Option("b", False, "no"))])


@pytest.mark.parametrize(
    "options, problem",
    [
        ((Option("a", True, "x"), Option("b", True, "y")), "2 correct"),
        ((Option("a", False, "x"), Option("b", False, "y")), "0 correct"),
        ((Option("a", True, "x"), Option("b", False, "  ")), "no explanation"),
        ((Option("a", True, "x"),), "at least two"),
        ((Option("a", True, "x"), Option("a", False, "y")), "repeats"),
    ],
)
def test_validate_names_the_problem(options, problem):
    with pytest.raises(QuizError, match=problem):
        validate([q(*options)])
    with pytest.raises(QuizError):
        validate([])


def test_answer_gives_feedback_for_every_option():
    question = q(Option("a", False, "too small"), Option("b", True, "just right"))
    assert answer(question, 1) == (True, "✅ Right. just right")
    assert answer(question, "a") == (False, "❌ Not quite. too small")
    with pytest.raises(KeyError):
        answer(question, "c")


def test_widget_shows_feedback_when_an_option_is_picked():
    question = q(Option("a", False, "too <small>"), Option("b", True, "just right"))
    box = quiz_module.quiz([question], title="T")
    picker, feedback = box.children[2], box.children[3]
    picker.value = "a"
    assert "Not quite" in feedback.value and "&lt;small&gt;" in feedback.value
    picker.value = "b"
    assert "Right" in feedback.value


class _Computed:
    """Stands for any value a notebook computed before its quiz: indexable, arithmetic, formattable."""

    def __getitem__(self, key):
        return self

    def __getattr__(self, name):
        return self

    def __call__(self, *args, **kwargs):
        return self

    def __iter__(self):  # finite: without it, iteration would call __getitem__ forever and exhaust the memory
        return iter((self,))

    def __format__(self, spec):
        return "<computed>"

    def _same(self, *args):
        return self

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _same
    __neg__ = __abs__ = _same


class _NotebookNames(dict):
    """Locals for a quiz cell: a name neither the cell, ``known`` nor Python defines was computed earlier."""

    def __init__(self, known: dict):
        super().__init__()
        self.known = known

    def __missing__(self, key):
        if key in self.known or key in vars(builtins):
            raise KeyError(key)  # found in the cell's globals or the builtins
        return _Computed()


def notebook_quizzes() -> list[tuple[str, str]]:
    out = []
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and "quiz([" in cell.source:
                out.append((path.name, cell.source))
    return out


def test_every_course_notebook_after_the_setup_check_ends_with_a_quiz():
    with_quiz = {name[:2] for name, _ in notebook_quizzes()}
    on_disk = {p.name[:2] for p in (REPO / "notebooks").glob("*.ipynb")} - {"00"}
    assert on_disk <= with_quiz, f"notebooks without a quiz: {sorted(on_disk - with_quiz)}"


@pytest.mark.parametrize("name, source", notebook_quizzes(), ids=lambda v: v if v.endswith("ipynb") else "")
def test_every_notebook_quiz_is_valid(name, source, monkeypatch):
    seen = []
    # the cell may import quiz itself: replace it in the module, so both ways reach the recorder
    monkeypatch.setattr(quiz_module, "quiz", lambda questions, **_: seen.append(questions))
    namespace = {"Option": Option, "Question": Question, "quiz": quiz_module.quiz}
    # the cell only builds questions and calls quiz(); explanations may quote numbers the notebook computed
    # earlier, which a stand-in supplies here
    exec(compile(source, name, "exec"), namespace, _NotebookNames(namespace))
    assert len(seen) == 1 and 3 <= len(seen[0]) <= 5, f"{name}: a quiz has 3 to 5 questions"
    validate(seen[0])


def all_questions(monkeypatch) -> list[Question]:
    seen: list = []
    monkeypatch.setattr(quiz_module, "quiz", lambda questions, **_: seen.extend(questions))
    for name, source in notebook_quizzes():
        namespace = {"Option": Option, "Question": Question, "quiz": quiz_module.quiz}
        exec(compile(source, name, "exec"), namespace, _NotebookNames(namespace))
    return seen


def test_display_order_is_a_stable_permutation():
    question = q(Option("a", True, "x"), Option("b", False, "y"), Option("c", False, "z"))
    order = quiz_module.display_order(question)
    assert sorted(o.text for o in order) == ["a", "b", "c"] and order == quiz_module.display_order(question)
    box = quiz_module.quiz([question], title="T")
    assert list(box.children[2].options) == [o.text for o in order]


def test_right_answers_are_not_concentrated_in_one_position(monkeypatch):
    questions = all_questions(monkeypatch)
    assert len(questions) >= 20
    stored = [next(i for i, o in enumerate(q.options) if o.correct) for q in questions]
    shown = [next(i for i, o in enumerate(quiz_module.display_order(q)) if o.correct) for q in questions]
    # where the notebooks write the right answer says nothing; where the learner sees it must not give it away
    counts = [shown.count(i) for i in range(3)]
    assert max(counts) <= 0.5 * len(questions), (counts, stored)
    assert min(counts) >= 0.15 * len(questions), counts
