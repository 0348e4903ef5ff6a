"""Exercise 09 (your own images): wrong answers written the way learners write them, each named by its
feedback; correct answers written differently from the solution, which pass."""

from __future__ import annotations

import filecmp
import hashlib
import itertools
import json
import os
import random
from collections import defaultdict
from pathlib import Path, PureWindowsPath

import nbformat
import numpy as np
import pytest

from tl_helpers import exercises
from tl_helpers.checks import run_check
from tl_helpers.checks.own_images import CONFLICT_ACTIONS, CONFLICT_FOLDER, expected_conflicts, strategy_cases

REPO = Path(__file__).resolve().parents[1]
STEM = "09_your_own_images_exercises"

GRADED_VARIANTS = [
    (
        STEM,
        '    conflicts = [group for group in by_content.values() if len({p.split("/")[0] for p in group}) > 1]',
        "    conflicts = [group for group in by_content.values() if len(group) > 1]",
        "label_conflicts",
        "within one class",
    ),
    (
        STEM,
        'conflict_action = "drop both until someone looks at it"',
        'conflict_action = "keep both"',
        "conflict_action",
        "teaches noise",
    ),
    (
        STEM,
        '        if name != "probe" and low > 0 and diff.mean() > best_gain:',
        '        if name != "probe" and diff.mean() > best_gain:',
        "choose_strategy",
        "within the noise",
    ),
    (
        STEM,
        'conflict_action = "drop both until someone looks at it"',
        'conflict_action = "look at the image and move it to the right class"',
        "conflict_action",
        None,
    ),
]


# ----------------------------------------------------------------------------- label_conflicts


def visible_files(root: Path) -> list[Path]:
    return [
        p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]


def class_of(rel: str) -> str:
    return rel.split("/")[0]


def solution_conflicts(root):
    by_content = defaultdict(list)
    for class_dir in sorted(root.iterdir()):
        if class_dir.name.startswith(".") or not class_dir.is_dir():
            continue
        for path in sorted(class_dir.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            by_content[hashlib.sha256(path.read_bytes()).hexdigest()].append(path.relative_to(root).as_posix())
    conflicts = [group for group in by_content.values() if len({p.split("/")[0] for p in group}) > 1]
    return sorted(sorted(group) for group in conflicts)


def walk_bytes_conflicts(root):  # another correct way: os.walk, the bytes themselves as the key
    by_bytes = {}
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if name.startswith("."):
                continue
            rel = Path(folder, name).relative_to(root).as_posix()
            if "/" in rel:
                by_bytes.setdefault(Path(folder, name).read_bytes(), []).append(rel)
    groups = [sorted(g) for g in by_bytes.values() if len({class_of(r) for r in g}) >= 2]
    return sorted(groups)


def filecmp_conflicts(root):  # another correct way: compare files pairwise, then merge into groups
    files = [p.relative_to(root).as_posix() for p in visible_files(root)]
    groups: list[set[str]] = []
    for a, b in itertools.combinations(files, 2):
        if filecmp.cmp(root / a, root / b, shallow=False):
            for g in groups:
                if a in g or b in g:
                    g |= {a, b}
                    break
            else:
                groups.append({a, b})
    return sorted(sorted(g) for g in groups if len({class_of(r) for r in g}) > 1)


def within_class_conflicts(root):  # every duplicate reported, in one class or several
    by_content = defaultdict(list)
    for path in visible_files(root):
        by_content[hashlib.md5(path.read_bytes()).hexdigest()].append(path.relative_to(root).as_posix())
    return sorted(sorted(g) for g in by_content.values() if len(g) > 1)


def by_name_conflicts(root):  # the same file name in two classes
    by_name = defaultdict(list)
    for path in visible_files(root):
        by_name[path.name].append(path.relative_to(root).as_posix())
    return sorted(sorted(g) for g in by_name.values() if len({class_of(r) for r in g}) > 1)


def name_and_content_conflicts(root):  # the same name *and* content: copies under another name are missed
    by_key = defaultdict(list)
    for path in visible_files(root):
        by_key[(path.name, path.read_bytes())].append(path.relative_to(root).as_posix())
    return sorted(sorted(g) for g in by_key.values() if len({class_of(r) for r in g}) > 1)


def hidden_included_conflicts(root):  # rglob without skipping hidden folders
    by_content = defaultdict(list)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            by_content[hashlib.sha256(path.read_bytes()).hexdigest()].append(path.relative_to(root).as_posix())
    return sorted(sorted(g) for g in by_content.values() if len({class_of(r) for r in g}) > 1)


def checkpoints_only_conflicts(root):  # skips .ipynb_checkpoints by name, but not other hidden folders
    by_content = defaultdict(list)
    for path in sorted(root.glob("*/*")):
        if path.is_file():
            by_content[hashlib.sha256(path.read_bytes()).hexdigest()].append(path.relative_to(root).as_posix())
    return sorted(sorted(g) for g in by_content.values() if len({class_of(r) for r in g}) > 1)


def pairs_conflicts(root):  # two files at a time
    files = visible_files(root)
    pairs = []
    for a, b in itertools.combinations(files, 2):
        ra, rb = a.relative_to(root).as_posix(), b.relative_to(root).as_posix()
        if class_of(ra) != class_of(rb) and a.read_bytes() == b.read_bytes():
            pairs.append(sorted([ra, rb]))
    return sorted(pairs)


def absolute_conflicts(root):
    by_content = defaultdict(list)
    for path in visible_files(root):
        by_content[hashlib.sha256(path.read_bytes()).hexdigest()].append(str(path))
    return sorted(sorted(g) for g in by_content.values() if len({Path(p).parent.name for p in g}) > 1)


def windows_conflicts(root):  # str(path.relative_to(root)) on Windows: backslashes
    return [[str(PureWindowsPath(p)) for p in group] for group in solution_conflicts(root)]


def unsorted_conflicts(root):
    return [list(reversed(group)) for group in reversed(solution_conflicts(root))]


def nothing_found(root):
    return []


@pytest.mark.parametrize("answer", [solution_conflicts, walk_bytes_conflicts, filecmp_conflicts])
def test_label_conflicts_correct_answers_pass(answer):
    result = run_check("label_conflicts", answer)
    assert result.passed, result.feedback


@pytest.mark.parametrize(
    "answer, mistake",
    [
        (within_class_conflicts, "within_class_duplicate"),
        (by_name_conflicts, "compared_names"),
        (name_and_content_conflicts, "compared_names"),
        (hidden_included_conflicts, "hidden_folder"),
        (checkpoints_only_conflicts, "hidden_folder"),
        (pairs_conflicts, "pairs_only"),
        (absolute_conflicts, "not_relative"),
        (windows_conflicts, "not_relative"),
        (unsorted_conflicts, "not_sorted"),
        (nothing_found, "missed_conflicts"),
        (lambda root: None, "wrong_type"),
        (lambda root: [[Path("bag/tag.png"), Path("t-shirt/tag.png")]], "wrong_type"),
    ],
)
def test_label_conflicts_mistakes_have_their_own_name(answer, mistake):
    result = run_check("label_conflicts", answer)
    assert not result.passed and result.mistake == mistake, (result.mistake, result.feedback)


def test_label_conflicts_messages_name_the_files_and_the_fix():
    names = run_check("label_conflicts", name_and_content_conflicts).feedback
    assert "different names" in names and "Compare contents" in names
    hidden = run_check("label_conflicts", checkpoints_only_conflicts).feedback
    assert ".trash/old.png" in hidden and "starting with '.'" in hidden
    windows = run_check("label_conflicts", windows_conflicts).feedback
    assert "backslashes" in windows and "as_posix()" in windows
    result = run_check("label_conflicts", [["bag/tag.png", "t-shirt/tag.png"]])  # the result, not the function
    assert not result.passed and result.mistake == "not_a_function"


def test_label_conflicts_a_crash_is_the_learners_bug_with_their_line():
    def crashing(root):
        return [p.read_bytes() for p in root.iterdir()]  # a class folder is no file

    result = run_check("label_conflicts", crashing)
    assert not result.passed and result.mistake == "crash"
    assert "IsADirectoryError" in result.feedback and "read_bytes" in result.feedback


def test_the_check_folder_holds_every_trap():
    expected = expected_conflicts(CONFLICT_FOLDER)
    assert [len(g) for g in expected] == [3, 2, 2]
    assert any(len({Path(p).name for p in g}) == 1 for g in expected)  # one copy kept its name
    assert any(len({Path(p).name for p in g}) == len(g) for g in expected)  # others did not
    hidden = [rel for rel in CONFLICT_FOLDER if rel.startswith(".") or "/." in rel]
    assert len(hidden) == 2
    for rel in hidden:  # each hidden copy has a visible twin in another class: a false conflict unless skipped
        twins = [r for r in CONFLICT_FOLDER if r not in hidden and CONFLICT_FOLDER[r] == CONFLICT_FOLDER[rel]]
        assert twins and all(class_of(t) != class_of(rel) for t in twins)


def test_label_conflicts_on_the_example_folder(tmp_path):
    from tl_helpers.adapt.examples import write_example_folder

    planted = write_example_folder(tmp_path / "clothes")
    assert solution_conflicts(tmp_path / "clothes") == [sorted(planted["conflict"])]


# ----------------------------------------------------------------------------- conflict_action


@pytest.mark.parametrize("answer, mistake", list(CONFLICT_ACTIONS.items()))
def test_conflict_action_options(answer, mistake):
    result = run_check("conflict_action", answer)
    assert result.passed == (mistake is None) and result.mistake == mistake, result.feedback
    loud = run_check("conflict_action", f"  {answer.capitalize()}. ")  # case, spaces and a full stop forgiven
    assert loud.passed == result.passed and loud.mistake == mistake


def test_conflict_action_keep_both_says_why():
    feedback = run_check("conflict_action", "keep both").feedback
    assert "noise" in feedback and "validation or test" in feedback


@pytest.mark.parametrize("answer", ["drop", 1, None, ["keep both"]])
def test_conflict_action_not_an_option(answer):
    result = run_check("conflict_action", answer)
    assert not result.passed and result.mistake == "not_an_option" and "keep both" in result.feedback


# ----------------------------------------------------------------------------- choose_strategy


def solution_choice(val_correct, seed=0):
    probe = np.asarray(val_correct["probe"], dtype=float)
    n = len(probe)
    resamples = np.random.default_rng(seed).integers(0, n, size=(2000, n))
    best, best_gain = "probe", 0.0
    for name, correct in val_correct.items():
        diff = np.asarray(correct, dtype=float) - probe
        low = np.percentile(diff[resamples].mean(axis=1), 2.5)
        if name != "probe" and low > 0 and diff.mean() > best_gain:
            best, best_gain = name, float(diff.mean())
    return best


def course_choice(val_correct, seed=0):  # another correct way: the adapt command's own interval
    from tl_helpers.adapt.strategies import paired_interval

    gains = {}
    for name, correct in val_correct.items():
        if name != "probe":
            diff, low, _ = paired_interval(correct, val_correct["probe"], seed=seed)
            if low > 0:
                gains[name] = diff
    return max(gains, key=gains.get) if gains else "probe"


def loop_choice(val_correct, seed=0):  # another correct way: plain Python, 1,000 resamples, quantiles
    rnd = random.Random(seed)
    probe = val_correct["probe"]
    n = len(probe)
    winners = []
    for name, correct in val_correct.items():
        if name == "probe":
            continue
        diffs = []
        for _ in range(1000):
            idx = [rnd.randrange(n) for _ in range(n)]
            diffs.append(sum(correct[i] for i in idx) / n - sum(probe[i] for i in idx) / n)
        diffs.sort()
        if diffs[int(0.025 * len(diffs))] > 0:
            winners.append((sum(correct) - sum(probe), name))
    return max(winners)[1] if winners else "probe"


def always_probe(val_correct, seed=0):
    return "probe"


def highest_accuracy(val_correct, seed=0):
    return max(val_correct, key=lambda name: sum(val_correct[name]))


def first_winner(val_correct, seed=0):
    for name in val_correct:
        if name != "probe" and course_choice({"probe": val_correct["probe"], name: val_correct[name]}, seed) == name:
            return name
    return "probe"


def separate_intervals(val_correct, seed=0):  # each accuracy's own (Wilson) interval: no overlap needed
    from tl_helpers.adapt.strategies import wilson_interval

    n = len(val_correct["probe"])
    probe_high = wilson_interval(sum(val_correct["probe"]), n)[1]
    gains = {
        name: sum(c)
        for name, c in val_correct.items()
        if name != "probe" and wilson_interval(sum(c), n)[0] > probe_high
    }
    return max(gains, key=gains.get) if gains else "probe"


def independent_bootstrap(val_correct, seed=0):  # each strategy resampled on its own images
    rng = np.random.default_rng(seed)
    probe = np.asarray(val_correct["probe"], dtype=float)
    n = len(probe)
    gains = {}
    for name, correct in val_correct.items():
        if name == "probe":
            continue
        a = np.asarray(correct, dtype=float)[rng.integers(0, n, (2000, n))].mean(1)
        b = probe[rng.integers(0, n, (2000, n))].mean(1)
        if np.percentile(a - b, 2.5) > 0:
            gains[name] = a.mean() - b.mean()
    return max(gains, key=gains.get) if gains else "probe"


def two_sided(val_correct, seed=0):  # "significantly different", in either direction
    from tl_helpers.adapt.strategies import paired_interval

    for name, correct in val_correct.items():
        if name != "probe":
            _, low, high = paired_interval(correct, val_correct["probe"], seed=seed)
            if low > 0 or high < 0:
                return name
    return "probe"


def reversed_sign(val_correct, seed=0):  # probe - strategy
    from tl_helpers.adapt.strategies import paired_interval

    gains = {}
    for name, correct in val_correct.items():
        if name != "probe":
            diff, low, _ = paired_interval(val_correct["probe"], correct, seed=seed)
            if low > 0:
                gains[name] = diff
    return max(gains, key=gains.get) if gains else "probe"


def underscored(val_correct, seed=0):
    return solution_choice(val_correct, seed).replace("-", "_")


def with_the_difference(val_correct, seed=0):
    return (solution_choice(val_correct, seed), 0.0)


@pytest.mark.parametrize("answer", [solution_choice, course_choice, loop_choice])
def test_choose_strategy_correct_answers_pass(answer):
    result = run_check("choose_strategy", answer)
    assert result.passed, result.feedback


@pytest.mark.parametrize(
    "answer, mistake",
    [
        (always_probe, "never_switches"),
        (highest_accuracy, "ignores_noise"),
        (first_winner, "not_the_best"),
        (separate_intervals, "unpaired"),
        (independent_bootstrap, "unpaired"),
        (two_sided, "switches_to_worse"),
        (reversed_sign, "reversed_difference"),
        (underscored, "unknown_name"),
        (with_the_difference, "wrong_type"),
    ],
)
def test_choose_strategy_mistakes_have_their_own_name(answer, mistake):
    result = run_check("choose_strategy", answer)
    assert not result.passed and result.mistake == mistake, (result.mistake, result.feedback)


@pytest.mark.parametrize("name", list(strategy_cases()))
def test_strategy_cases_are_far_from_every_boundary(name):
    """Every seed 0..20 and 1,000 to 10,000 resamples of the course's paired interval decide each case the same
    way, at least a point away from zero; the paired case's accuracies have overlapping separate intervals."""
    from tl_helpers.adapt.strategies import paired_interval, wilson_interval

    results, answer = strategy_cases()[name]
    assert len({len(v) for v in results.values()}) == 1 and list(results)[0] == "probe"
    beats = {}  # the strategies whose interval lies above zero, with their difference
    for other, correct in results.items():
        if other == "probe":
            continue
        decided = set()
        for n_boot, seed in itertools.product((1000, 2000, 10000), range(21)):
            diff, low, high = paired_interval(correct, results["probe"], seed=seed, n_boot=n_boot)
            assert low >= 1.0 or low <= -1.0, (other, n_boot, seed, low, high)
            decided.add(low > 0)
            if low > 0:
                beats[other] = diff
        assert len(decided) == 1, other  # the same decision for every seed and number of resamples
    assert answer == (max(beats, key=beats.get) if beats else "probe")
    if len(beats) > 1:
        assert abs(np.subtract(*beats.values())) >= 10  # the larger gain is clearly larger
    if name == "paired":
        n = len(results["probe"])
        probe, tuned = wilson_interval(sum(results["probe"]), n), wilson_interval(sum(results[answer]), n)
        assert tuned[0] < probe[1]  # the separate intervals overlap


# ----------------------------------------------------------------------------- the notebooks


def test_released_notebook_holds_no_answer():
    solution = nbformat.read(REPO / "solutions" / f"{STEM}.ipynb", as_version=4)
    released = nbformat.read(REPO / "exercises" / f"{STEM}.ipynb", as_version=4)
    text = json.dumps([c.source for c in released.cells])
    code = "\n".join(c.source for c in released.cells if c.cell_type == "code")
    for word in ("hashlib.sha256(path", "as_posix()", "np.percentile", "resamples", "best_gain", "conflict_action ="):
        assert word not in text, word
    for option in CONFLICT_ACTIONS:  # the options are listed in the text, never chosen in the code
        assert option not in code
    stubs = [c.source for c in released.cells if c.cell_type == "code" and "NotImplementedError" in c.source]
    assert len(stubs) == 3 and all("hint(" in s for s in stubs)
    assert exercises.render(exercises.make_exercise(solution, STEM)) == (
        REPO / "exercises" / f"{STEM}.ipynb"
    ).read_text(encoding="utf-8")
