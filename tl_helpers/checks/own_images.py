"""Checks of "your own images" (exercises 09): label conflicts found by content, what to do about them, and the
decision rule that keeps the probe unless another strategy beats it beyond the noise.

``label_conflicts`` writes two small class-per-folder datasets of tiny random PNGs into a temporary folder
(:data:`CONFLICT_FOLDER`, :data:`CLEAN_FOLDER`: the same number is the same bytes) and compares the learner's
groups with the ones the layout implies; every plausible wrong way of finding them gives a different answer
on these folders. ``choose_strategy`` runs the learner's rule on synthetic per-image results of 100
validation images (:func:`strategy_cases`), built far from every boundary: any paired bootstrap with 1,000
resamples or more, whatever its seed, decides each case the same way (``tests/test_exercise_09.py`` checks
it across seeds with the ``adapt`` command's own interval).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from tl_helpers.checks.core import CheckResult, fail, learner_error, ok, register
from tl_helpers.checks.registry import exercise

__all__ = [
    "CLEAN_FOLDER",
    "CONFLICT_ACTIONS",
    "CONFLICT_FOLDER",
    "expected_conflicts",
    "strategy_cases",
    "write_folder",
]


def _conflict_folder() -> dict[str, int]:
    files: dict[str, int] = {}
    for cls in ("bag", "shirt", "t-shirt"):  # the same file names in every class, different photos
        for i in range(4):
            files[f"{cls}/{i:03d}.png"] = len(files)
    files["shirt/004.png"] = files["t-shirt/from-shirt.png"] = 100  # one photo in two classes, two names
    files["bag/strap.png"] = files["shirt/collar.png"] = files["t-shirt/sleeve.png"] = 101  # in three classes
    files["bag/tag.png"] = files["t-shirt/tag.png"] = 102  # in two classes under the same name
    files["bag/again.png"] = files["bag/001.png"]  # a duplicate within one class: no conflict
    files["t-shirt/.ipynb_checkpoints/000-checkpoint.png"] = files["shirt/002.png"]  # a tool's hidden copy
    files[".trash/old.png"] = files["bag/003.png"]  # a hidden folder next to the class folders
    return files


def _clean_folder() -> dict[str, int]:
    files = {f"{cls}/{i:03d}.png": 200 + 10 * k + i for k, cls in enumerate(("cat", "dog")) for i in range(3)}
    files["dog/001 (1).png"] = files["dog/001.png"]  # a duplicate within one class
    files["cat/.ipynb_checkpoints/000-checkpoint.png"] = files["dog/002.png"]  # a hidden copy
    return files


CONFLICT_FOLDER: dict[str, int] = _conflict_folder()
"""Relative path -> content number (the same number: the same bytes) of the folder with three label conflicts."""
CLEAN_FOLDER: dict[str, int] = _clean_folder()
"""The same for a folder without any label conflict (a duplicate within a class and a hidden copy only)."""


def _png(content: int) -> bytes:
    """A tiny random PNG, the same bytes for the same ``content`` number."""
    from PIL import Image

    pixels = np.random.default_rng([9, content]).integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write_folder(root: Path, files: dict[str, int]) -> Path:
    """Write ``files`` (relative path -> content number) under ``root``; returns ``root``."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png(content))
    return root


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))


def _class_of(rel: str) -> str:
    return rel.split("/", 1)[0]


def _name_of(rel: str) -> str:
    return rel.rsplit("/", 1)[-1]


def expected_conflicts(files: dict[str, int]) -> list[list[str]]:
    """The right answer for a folder: the visible files grouped by content, groups spanning two or more classes."""
    by_content: dict[int, list[str]] = defaultdict(list)
    for rel, content in files.items():
        if not _hidden(rel):
            by_content[content].append(rel)
    return sorted(sorted(g) for g in by_content.values() if len({_class_of(rel) for rel in g}) > 1)


def _as_groups(answer: Any) -> list[list[str]] | CheckResult:
    """The learner's answer as a list of lists of strings, or what is wrong with its type."""
    if answer is None:
        return fail(
            "find_label_conflicts returned None: return the list of groups (an empty list when there is none), "
            "do not only print it.",
            mistake="wrong_type",
        )
    if not isinstance(answer, (list, tuple)) or any(
        not isinstance(group, (list, tuple)) or isinstance(group, str) for group in answer
    ):
        return fail(
            f"find_label_conflicts should return a list of groups, each a sorted list of paths "
            f"([['dog/a.png', 'cat/b.png'], ...]); got {type(answer).__name__}: {str(answer)[:120]}.",
            mistake="wrong_type",
        )
    for group in answer:
        for path in group:
            if isinstance(path, os.PathLike):
                return fail(
                    f"Return the paths as strings, not {type(path).__name__} objects: "
                    "path.relative_to(root).as_posix() gives 'class/file.png'.",
                    mistake="wrong_type",
                )
            if not isinstance(path, str):
                return fail(f"Each path should be a string, got {type(path).__name__}: {path!r}.", mistake="wrong_type")
    return [list(group) for group in answer]


def _path_problem(path: str, root: Path, files: dict[str, int]) -> CheckResult | None:
    """What is wrong with one returned path (None: a file of the folder, relative, with forward slashes)."""
    if path in files:
        return None
    if "\\" in path:
        how = "they contain backslashes (Windows separators)"
    elif os.path.isabs(path) or path.startswith(str(root)):
        how = "they are absolute paths"
    elif path.startswith(root.name + "/"):
        how = f"they start with the folder's own name ({root.name}/)"
    elif "/" not in path and any(_name_of(rel) == path for rel in files):
        how = "they are file names only, without their class folder"
    else:
        how = "it is not the path of a file inside the folder"
    return fail(
        f"{path!r} is not a path relative to the folder: {how}. Return 'class/file.png', the same on every "
        "computer: path.relative_to(root).as_posix().",
        mistake="not_relative",
    )


def _diagnose(groups: list[list[str]], root: Path, files: dict[str, int]) -> CheckResult | None:
    """The mistake in the learner's groups for one folder (None: exactly the expected groups, sorted)."""
    for group in groups:
        for path in group:
            problem = _path_problem(path, root, files)
            if problem is not None:
                return problem
    for group in groups:
        hidden = [path for path in group if _hidden(path)]
        if hidden:
            return fail(
                f"You report {hidden[0]}, a file inside a hidden folder (a name starting with '.', like "
                ".ipynb_checkpoints, which Jupyter writes by itself): it is no image of the dataset, so it is "
                "no conflict. Skip every file whose path has a part starting with '.'.",
                mistake="hidden_folder",
            )
    for group in groups:
        if len(set(group)) != len(group):
            return fail(f"The group {group} lists the same file twice.", mistake="wrong_groups")
        if len({files[path] for path in group}) > 1:
            if len({_name_of(path) for path in group}) == 1:
                return fail(
                    f"{', '.join(group)} share a file name but not their content: you compared names. Two "
                    "cameras both write IMG_0001.jpg; a conflict is the same *image* (the same bytes) in two "
                    "classes, whatever its name. Compare contents, e.g. a hash of path.read_bytes().",
                    mistake="compared_names",
                )
            return fail(
                f"{', '.join(group)} do not have the same content. Group files by their bytes (e.g. "
                "hashlib.sha256(path.read_bytes()).hexdigest()), not by their size or anything else.",
                mistake="different_content",
            )
    for group in groups:
        if len({_class_of(path) for path in group}) < 2:
            if len(group) == 1:
                return fail(
                    f"The group {group} has one file: a conflict needs copies in two classes.", mistake="wrong_groups"
                )
            return fail(
                f"{', '.join(group)} are identical, but all in the class {_class_of(group[0])!r}: a duplicate "
                "within one class is no label conflict (its label is not in doubt). Report a group only when its "
                "files sit in two or more different classes.",
                mistake="within_class_duplicate",
            )
    expected = expected_conflicts(files)
    got = [frozenset(group) for group in groups]
    missing = [group for group in expected if frozenset(group) not in got]
    for group in missing:
        if len(group) > 2 and any(len(g) >= 2 and g < frozenset(group) for g in got):
            return fail(
                f"{', '.join(group)} are one image in {len(group)} classes: report them as ONE group of "
                f"{len(group)}, not as pairs. Group all files by content first, then keep each group whose files "
                "span two or more classes.",
                mistake="pairs_only",
            )
    if missing:
        renamed = [group for group in missing if len({_name_of(path) for path in group}) > 1]
        if renamed and got and all(len({_name_of(path) for path in g}) == 1 for g in got):
            return fail(
                f"You missed {', '.join(renamed[0])}: the same bytes under different names. You seem to compare "
                "names (or names and contents); a copy filed under another class often gets another name. "
                "Compare contents only.",
                mistake="compared_names",
            )
        return fail(
            f"{len(missing)} label conflict(s) missed, e.g. {', '.join(missing[0])} (the same bytes in "
            f"{len({_class_of(p) for p in missing[0]})} classes); expected {len(expected)} group(s), got "
            f"{len(groups)}. Read every file of every class folder and group the files by content.",
            mistake="missed_conflicts",
        )
    if len(set(got)) != len(got) or len(got) != len(expected):
        return fail(
            f"Expected {len(expected)} group(s), got {len(groups)}: each image in several classes is one group, "
            "reported once.",
            mistake="wrong_groups",
        )
    if groups != expected:
        return fail(
            "The right groups, in another order: sort the paths inside each group, then sort the list of groups "
            "(sorted(sorted(group) for group in groups)), so that the answer does not depend on the order in "
            "which the computer lists the files.",
            mistake="not_sorted",
        )
    return None


@register("label_conflicts", 3, "groups of identical files filed under two or more classes, found by content")
def _check_label_conflicts(find_label_conflicts: Any) -> CheckResult:
    if not callable(find_label_conflicts):
        return fail(
            "Pass your function find_label_conflicts itself (no parentheses), not its result.",
            mistake="not_a_function",
        )
    with tempfile.TemporaryDirectory(prefix="tl-label-conflicts-") as tmp:
        cases = {}
        for name, files in (("conflicts", CONFLICT_FOLDER), ("clean", CLEAN_FOLDER)):
            root = write_folder(Path(tmp) / name / "photos", files)
            try:
                answer = find_label_conflicts(root)
            except NotImplementedError:
                raise
            except Exception as exc:
                return learner_error(exc, "find_label_conflicts")
            groups = _as_groups(answer)
            if isinstance(groups, CheckResult):
                return groups
            cases[name] = (groups, root, files)
        for groups, root, files in cases.values():
            problem = _diagnose(groups, root, files)
            if problem is not None:
                return problem
    n = len(expected_conflicts(CONFLICT_FOLDER))
    return ok(
        f"Found the {n} label conflicts of a test folder by content (a pair under two names, a pair under one "
        "name, one image in three classes), and none in a folder with only a within-class duplicate and "
        "hidden copies; relative paths, sorted."
    )


CONFLICT_ACTIONS: dict[str, str | None] = {
    "keep both": "kept_both_labels",
    "keep the first class alphabetically": "arbitrary_label",
    "drop both until someone looks at it": None,
    "look at the image and move it to the right class": None,
}
"""The options the notebook lists -> the mistake each names (None: a right answer)."""

_ACTION_FEEDBACK = {
    "keep both": "The same image with two labels teaches noise: whatever the model predicts for it, one copy "
    "calls it wrong, so training pulls it both ways. And a random split can put one copy in training and the "
    "other in validation or test, where the model is scored on an image it has seen, against a label it was "
    "trained to contradict. Drop the copies (or fix the label by looking at the image).",
    "keep the first class alphabetically": "Alphabetical order says nothing about what the image shows: the "
    "kept label is a coin toss, right or wrong with no way to tell, and a wrong label is worse than a missing "
    "image. Drop the copies until someone looks, or look and move the image to the class it belongs to.",
    "drop both until someone looks at it": "Dropping every copy costs one image and removes a label nobody can "
    "vouch for; that is what `adapt` does (it lists the conflict in its report so someone can decide).",
    "look at the image and move it to the right class": "The best fix when a person can decide: one copy, in the "
    "class it belongs to. Until that happens, `adapt` excludes every copy and lists the conflict in its report.",
}


@register("conflict_action", 1, "decision: what to do with an image filed under two classes")
def _check_conflict_action(conflict_action: Any) -> CheckResult:
    options = "; ".join(repr(option) for option in CONFLICT_ACTIONS)
    if not isinstance(conflict_action, str):
        return fail(f"conflict_action should be one of the options, a string: {options}.", mistake="not_an_option")
    answer = " ".join(conflict_action.strip().strip(".").lower().split())
    if answer not in CONFLICT_ACTIONS:
        return fail(f"{conflict_action!r} is not one of the options: {options}.", mistake="not_an_option")
    mistake = CONFLICT_ACTIONS[answer]
    if mistake is not None:
        return fail(_ACTION_FEEDBACK[answer], mistake=mistake)
    return ok(_ACTION_FEEDBACK[answer])


# ----------------------------------------------------------------------------- choose_strategy

N_VAL = 100
"""Validation images in every case of :func:`strategy_cases`."""


def _results(probe_right: int, changes: dict[str, tuple[int, int]]) -> dict[str, list[bool]]:
    """Per-image correctness: the probe right on ``probe_right`` images; each other strategy right on the same
    images, plus ``gained`` the probe gets wrong, minus ``lost`` it gets right. One fixed shuffle for all."""
    probe = np.arange(N_VAL) < probe_right
    out = {"probe": probe}
    for name, (gained, lost) in changes.items():
        other = probe.copy()
        other[probe_right : probe_right + gained] = True
        other[:lost] = False
        out[name] = other
    order = np.random.default_rng(2024).permutation(N_VAL)
    return {name: [bool(x) for x in correct[order]] for name, correct in out.items()}


def strategy_cases() -> dict[str, tuple[dict[str, list[bool]], str]]:
    """The cases ``choose_strategy`` is run on: name -> (per-image results of 100 validation images, answer).

    Differences in points against the probe (paired 95 % bootstrap interval, 2,000 resamples): ``clear``
    +30 (about +20 to +40); ``noise`` +1 (6 gained, 5 lost: about -6 to +8); ``two_winners`` and
    ``two_winners_swapped`` +15 and +30, in both orders of the dictionary; ``paired`` +6 (6 gained, none
    lost: about +2 to +11, while the two accuracies' own intervals, 70 % and 76 % of 100, overlap widely);
    ``worse`` -20.
    """
    return {
        "clear": (_results(60, {"fine-tune": (32, 2)}), "fine-tune"),
        "noise": (_results(70, {"fine-tune": (6, 5)}), "probe"),
        "two_winners": (_results(60, {"two-phase": (16, 1), "fine-tune": (31, 1)}), "fine-tune"),
        "two_winners_swapped": (_results(60, {"two-phase": (31, 1), "fine-tune": (16, 1)}), "two-phase"),
        "paired": (_results(70, {"fine-tune": (6, 0)}), "fine-tune"),
        "worse": (_results(80, {"fine-tune": (2, 22)}), "probe"),
    }


def _accuracies(results: dict[str, list[bool]]) -> str:
    return ", ".join(f"{name} {sum(correct)}/{len(correct)}" for name, correct in results.items())


@register("choose_strategy", 3, "keep the probe unless a paired bootstrap interval puts another strategy above it")
def _check_choose_strategy(choose_strategy: Any) -> CheckResult:
    if not callable(choose_strategy):
        return fail(
            "Pass your function choose_strategy itself (no parentheses), not its result.", mistake="not_a_function"
        )
    cases = strategy_cases()
    chosen: dict[str, Any] = {}
    for name, (results, _) in cases.items():
        for seed in (0, 1):
            try:
                answer = choose_strategy({k: list(v) for k, v in results.items()}, seed=seed)
            except NotImplementedError:
                raise
            except Exception as exc:
                return learner_error(exc, "choose_strategy")
            if not isinstance(answer, str):
                return fail(
                    f"choose_strategy should return one strategy name, a string such as 'probe'; got "
                    f"{type(answer).__name__}: {str(answer)[:80]}.",
                    mistake="wrong_type",
                )
            if answer not in results:
                return fail(
                    f"choose_strategy returned {answer!r}, which is not one of the strategies it was given "
                    f"({', '.join(results)}): return one of the dictionary's keys.",
                    mistake="unknown_name",
                )
            if chosen.get(name, cases[name][1]) == cases[name][1]:  # a wrong answer for either seed stays
                chosen[name] = answer

    def wrong(name: str) -> bool:
        return chosen[name] != cases[name][1]

    def described(name: str) -> str:
        return f"{_accuracies(cases[name][0])} right on the same {N_VAL} validation images"

    if wrong("worse"):
        if wrong("clear"):
            return fail(
                f"With {described('worse')}, you switch to fine-tune, and with {described('clear')} you keep "
                "the probe: your difference has the wrong sign. Subtract the probe's per-image results from the "
                "other strategy's (other - probe), so that a positive difference means better than the probe.",
                mistake="reversed_difference",
            )
        return fail(
            f"With {described('worse')}, you switch to fine-tune, which is 20 points *worse*: a strategy replaces "
            "the probe only when its interval of (strategy - probe) lies entirely above zero; an interval below "
            "zero means it is worse.",
            mistake="switches_to_worse",
        )
    if wrong("clear"):
        return fail(
            f"With {described('clear')} (+30 points, the paired interval far above zero) you keep the probe: "
            "switch when the 2.5th percentile of the bootstrapped differences (strategy - probe) is above zero.",
            mistake="never_switches",
        )
    if wrong("noise"):
        return fail(
            f"With {described('noise')} (+1 point: 6 images gained, 5 lost) you switch to fine-tune: one point "
            "on 100 images is well within the noise (its paired interval goes from about -6 to +8 points). Keep "
            "the probe unless the whole 95 % interval of the difference lies above zero.",
            mistake="ignores_noise",
        )
    for name in ("two_winners", "two_winners_swapped"):
        if wrong(name):
            return fail(
                f"With {described(name)}, both beat the probe beyond the noise, and you return {chosen[name]!r}: "
                "among several strategies whose interval lies above zero, return the one with the larger "
                "difference, not the first or the last one found.",
                mistake="not_the_best",
            )
    if wrong("paired"):
        return fail(
            f"With {described('paired')} (fine-tune right on every image the probe gets right, and 6 more) you "
            "keep the probe. The two accuracies' own intervals overlap, but the comparison is paired: resample "
            "the *images* and compute the difference on the same resampled images for both strategies (one "
            "difference per image, +1, 0 or -1); its interval lies above zero.",
            mistake="unpaired",
        )
    return ok(
        "Keeps the probe on noise (+1 point) and on a worse strategy, switches on a clear gain and on a small "
        "but consistent paired gain (+6 points, no image lost), and picks the larger of two real gains."
    )


exercise(
    "label_conflicts",
    "A label conflict is one image (the same bytes) filed under two or more classes, whatever its file names. "
    "Group every visible file by its content, then keep the groups whose files sit in different classes.",
    "`root.iterdir()` lists the class folders (skip names starting with '.'); `hashlib.sha256(path.read_bytes())"
    ".hexdigest()` names a file's content; `path.relative_to(root).as_posix()` gives 'class/file.png'; a "
    "`collections.defaultdict(list)` collects the paths of each content.",
    "by_content = defaultdict(list)\n"
    "for class_dir in sorted(root.iterdir()):  # skip hidden ones and plain files\n"
    "    for path in class_dir.iterdir():  # skip hidden ones and folders\n"
    "        by_content[<hash of the bytes>].append(<relative posix path>)\n"
    "return sorted(sorted(g) for g in by_content.values() if <the classes of g: two or more>)",
)
exercise(
    "conflict_action",
    "Ask what the model learns from one image with two labels, and where each copy can land when the data is "
    "split into training, validation and test.",
    "Read the options again: which ones leave exactly one trustworthy label, or none, and which keep a label "
    "that nobody checked?",
    'conflict_action = "<one of the options, copied exactly>"  # two of the four are right',
)
exercise(
    "choose_strategy",
    "A strategy replaces the probe only when it is better beyond the noise: the 95 % interval of its accuracy "
    "difference to the probe, computed on the same images (paired), lies entirely above zero.",
    "Per image the difference is +1, 0 or -1 (`np.asarray(other, float) - np.asarray(probe, float)`); "
    "`np.random.default_rng(seed).integers(0, n, size=(2000, n))` draws 2,000 resamples of the images; "
    "`np.percentile(means, 2.5)` is the interval's lower end.",
    "diff = <other - probe, per image>\n"
    "boot = diff[resamples].mean(axis=1)  # the same resampled images for both strategies\n"
    "if np.percentile(boot, 2.5) > 0 and diff.mean() > best_gain: best, best_gain = name, diff.mean()\n"
    "return best  # 'probe' when nothing qualified",
)
