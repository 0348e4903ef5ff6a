"""One id per exercise: what a learner types in ``check(...)`` and ``hint(...)`` is the gradebook column.

Every ``check("...")`` and ``hint("...")`` id shown anywhere a learner or an instructor reads (README, docs,
notebooks, exercises, solutions, the e2e tests and fixtures, the package's docstrings and the generator's
placeholder) must name a registered exercise; per exercise notebook, the graded columns, the ids its
``check(...)`` cells use and its ``# EXERCISE:`` lines are the same ids.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from tl_helpers import exercises
from tl_helpers.checks import ASSIGNMENTS, CHECKS, EXERCISES, HINTS, check, hint, hints
from tl_helpers.checks.registry import exercise
from tl_helpers.checks.table import GRADED

REPO = Path(__file__).resolve().parents[1]

# check("id" / hint('id' in any text, including JSON-escaped notebook sources (check(\"id\")); run_check( is
# not a learner's call and does not match (no word boundary inside it)
CALL = re.compile(r"""\b(check|hint)\(\s*\\?["']([A-Za-z_][A-Za-z0-9_]*)\\?["']""")
# the e2e spec names its exercise in a constant: const EXERCISE = 'freeze_backbone';
TS_CONSTANT = re.compile(r"""\bconst (?:EXERCISE|CHECK) = ["']([A-Za-z_][A-Za-z0-9_]*)["']""")


def shown_ids(text: str) -> list[str]:
    """The exercise ids a text shows in ``check("id"...)`` or ``hint("id")`` calls (and e2e constants)."""
    return [m.group(2) for m in CALL.finditer(text)] + TS_CONSTANT.findall(text)


def places() -> dict[str, list[Path]]:
    """Where learners and instructors read exercise ids, by kind (tests/ is left out: it names bad ids)."""
    return {
        "README": [REPO / "README.md", REPO / "e2e" / "README.md"],
        "docs": sorted((REPO / "docs").rglob("*.md")) + sorted((REPO / "docs").rglob("*.py")),
        "notebooks": sorted((REPO / "notebooks").glob("*.ipynb")),
        "exercises": sorted((REPO / "exercises").glob("*.ipynb")),
        "solutions": sorted((REPO / "solutions").glob("*.ipynb")),
        "e2e": [p for p in sorted((REPO / "e2e").rglob("*")) if p.suffix in (".ts", ".ipynb") and _not_vendored(p)],
        "tl_helpers": sorted((REPO / "tl_helpers").rglob("*.py")),
    }


def _not_vendored(path: Path) -> bool:
    return not {"node_modules", "screenshots", "test-results"} & set(path.parts)


def docstrings(path: Path) -> str:
    """The docstrings and string constants of a module (its text a learner or a maintainer reads)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parts = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    return "\n".join(parts)


def test_the_extractor_finds_ids_in_every_style():
    assert shown_ids('check("freeze_backbone", model)') == ["freeze_backbone"]
    assert shown_ids("hint('bn_frozen')") == ["bn_frozen"]
    assert shown_ids('"check(\\"preprocess\\", preprocess, model)"') == ["preprocess"]  # a notebook's JSON
    assert shown_ids("const EXERCISE = 'freeze_backbone';") == ["freeze_backbone"]
    assert shown_ids('run_check("accuracy", acc)') == []  # the check functions' entry, not an exercise id
    assert shown_ids('hint("{exercise}")') == [] and shown_ids('hint("exercise id")') == []


def test_every_id_shown_anywhere_is_a_registered_exercise():
    found: dict[str, list[str]] = {}
    for kind, paths in places().items():
        for path in paths:
            text = path.read_text(encoding="utf-8")
            if path.suffix == ".py":
                text = docstrings(path)
            for id in shown_ids(text):
                found.setdefault(kind, []).append(id)
                assert id in EXERCISES, f"{path.relative_to(REPO)} shows {id!r}, which is no exercise"
    # every kind of place really shows ids (so a broken pattern cannot make this test pass vacuously)
    assert {"README", "docs", "exercises", "solutions", "e2e", "tl_helpers"} <= set(found), sorted(found)
    assert "freeze_backbone" in found["README"] and "freeze_backbone" in found["e2e"]


def test_the_generators_placeholder_names_the_regions_exercise():
    for id in EXERCISES:
        assert shown_ids(exercises.placeholder(id)) == [id]
    assert shown_ids(exercises.__doc__ or "") and all(i in EXERCISES for i in shown_ids(exercises.__doc__ or ""))


def test_per_notebook_columns_check_ids_and_hint_ids_are_the_same():
    assert sorted(GRADED) == sorted(ASSIGNMENTS)
    for stem, rows in ASSIGNMENTS.items():
        columns = [column for column, _, _ in rows]
        assert len(columns) == len(set(columns)), f"{stem}: a gradebook column twice"
        solution = nbformat.read(REPO / "solutions" / f"{stem}.ipynb", as_version=4)
        released = nbformat.read(REPO / "exercises" / f"{stem}.ipynb", as_version=4)
        code = "\n".join(c.source for c in solution.cells if c.cell_type == "code")
        check_ids = [m.group(2) for m in CALL.finditer(code) if m.group(1) == "check"]
        markers = [e for c in solution.cells if c.cell_type == "code" for e in exercises.exercise_ids(c.source)]
        stub_hints = [
            m.group(2)
            for c in released.cells
            if c.cell_type == "code"
            for m in CALL.finditer(c.source)
            if m.group(1) == "hint"
        ]
        # the notebook's check(...) cells are exactly its graded columns, each once
        assert sorted(check_ids) == sorted(columns), stem
        # every answer region names one of the notebook's graded exercises, and its stub asks for that hint
        assert markers and set(markers) <= set(columns), (stem, sorted(set(markers) - set(columns)))
        assert set(markers) <= set(stub_hints), stem
        for column, check_id, variables in rows:
            record = EXERCISES[column]
            assert record.id == column and record.check == check_id and check_id in CHECKS
            assert record.notebooks[stem] == variables
            assert record.points == CHECKS[check_id].points > 0
            assert HINTS[column] is record.hints


def test_every_exercise_is_graded_and_has_three_hint_steps_and_every_hint_an_exercise():
    assert set(HINTS) == set(EXERCISES)
    for id, record in EXERCISES.items():
        assert record.notebooks, f"exercise {id!r} is graded in no notebook"
        assert set(record.notebooks) <= set(ASSIGNMENTS)
        steps = record.hints.steps
        assert len(set(steps)) == 3 and all(len(s) > 20 for s in steps), id
        if id in CHECKS:  # an id that is also a check function's names that very function
            assert record.check == id


def test_the_same_task_in_two_notebooks_keeps_its_id_and_different_tasks_get_their_own():
    assert set(EXERCISES["split_leakage"].notebooks) == {
        "02_feature_extraction_exercises",
        "06_capstone_quick_check_exercises",
    }
    assert set(EXERCISES["optimizer_params"].notebooks) == {
        "03_freezing_exercises",
        "06_capstone_quick_check_exercises",
    }
    for a, b in (("fine_tuned_accuracy", "honest_accuracy"), ("replace_head", "replace_head_resnet")):
        assert EXERCISES[a].check == EXERCISES[b].check and EXERCISES[a].hints != EXERCISES[b].hints


def test_instructors_table_lists_each_notebooks_exercises_and_points():
    guide = (REPO / "docs" / "INSTRUCTORS.md").read_text(encoding="utf-8")
    for stem, rows in ASSIGNMENTS.items():
        listed = ", ".join(f"{column} ({EXERCISES[column].points})" for column, _, _ in rows)
        assert f"| `{stem}` | {listed} |" in guide, stem


@pytest.mark.parametrize("call", [check, hint])
def test_a_wrong_id_is_one_keyerror_with_the_valid_ids_closest_first(call, capsys):
    hints.reset_hints()
    with pytest.raises(KeyError) as raised:
        call("freeze_backbon", None) if call is check else call("freeze_backbon")
    message = str(raised.value)
    assert "Unknown exercise 'freeze_backbon'" in message and "Did you mean 'freeze_backbone'?" in message
    listed = message.split("Exercise ids: ", 1)[1].strip("'\"").split(", ")
    assert listed[0] == "freeze_backbone" and sorted(listed) == sorted(EXERCISES)
    with pytest.raises(KeyError, match="Unknown exercise 'accuracy'"):  # a check function, not an exercise
        call("accuracy", None) if call is check else call("accuracy")
    assert hints.hints_used() == {}  # nothing was counted or printed for a typo
    assert capsys.readouterr().out == ""


def test_check_and_hint_print_the_exercise_id(capsys):
    hints.reset_hints()
    result = check("replace_head_resnet", "not a model")
    hint("replace_head_resnet")
    out = capsys.readouterr().out
    assert not result.passed and "❌ replace_head_resnet (0/2 points)" in out
    assert "replace_head_resnet, hint 1/3" in out
    hints.reset_hints()


def test_declaring_an_exercise_twice_or_under_another_checks_id_is_refused():
    before = dict(EXERCISES)
    with pytest.raises(ValueError, match="declared twice"):
        exercise("freeze_backbone", "an idea here", "a place to look", "some code", check="freeze_backbone")
    with pytest.raises(ValueError, match="must run that check"):
        exercise("accuracy", "an idea here", "a place to look", "some code", check="normalisation")
    assert EXERCISES == before and set(HINTS) == set(EXERCISES)
