"""The instructor's private data: loading, the one-file format, and grading on it instead of the built-in splits."""

from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest

from tests.helpers import make_fake_eurosat
from tl_helpers import grading, private_data
from tl_helpers.checks import run_check
from tl_helpers.checks.outcomes import graded_heldout
from tl_helpers.checks.transfer import graded_digits, private_digits
from tl_helpers.cli import main
from tl_helpers.data import EUROSAT_CLASSES

MEMORISER = """
import numpy as np
from tl_helpers.checks.transfer import private_digits

_X, _y = private_digits()  # the built-in "private" digits: every learner has them
_answers = {x.tobytes(): int(label) for x, label in zip(_X, _y)}


def predict_digits(images):
    images = np.asarray(images, dtype=np.float32)
    return np.array([_answers.get(x.tobytes(), 0) for x in images])


scores = {"raw pixels": 0.11, "memorised": 0.12}  # the comparison 07 asks for (low: no contradiction to flag)
"""


def memoriser():
    namespace: dict = {}
    exec(MEMORISER, namespace)
    return namespace["predict_digits"]


def honest():
    from sklearn.svm import SVC

    from tl_helpers.data import load_digits_public

    X, y = load_digits_public()
    svc = SVC().fit(X.reshape(len(X), -1), y)
    return lambda images: svc.predict(np.asarray(images).reshape(len(images), -1))


def instructor_digits(folder: Path) -> Path:
    """Digits no learner has: generated from the private ones with pixel noise, true labels (none equal a built-in one).

    An instructor would bring digits from elsewhere; generating them keeps the test offline and fast.
    """
    X, y = private_digits()
    noisy = np.clip(X + np.random.default_rng(7).normal(0, 0.03, X.shape), 0, 1).astype(np.float32)
    assert not {x.tobytes() for x in noisy} & {x.tobytes() for x in X}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / private_data.DIGITS_FILE, X=noisy, y=y)
    return folder


def test_memorising_the_builtin_split_earns_nothing_on_the_instructors_digits(tmp_path, monkeypatch):
    monkeypatch.delenv(private_data.PRIVATE_DATA_ENV, raising=False)
    assert run_check("digits_strategy", memoriser()).passed is True  # full marks on the built-in split
    folder = instructor_digits(tmp_path / "instructor")
    monkeypatch.setenv(private_data.PRIVATE_DATA_ENV, str(folder))
    cheat = run_check("digits_strategy", memoriser())
    assert cheat.passed is False and "below 95%" in cheat.feedback, cheat.feedback
    assert str(tmp_path) not in cheat.feedback and "digits.npz" not in cheat.feedback
    fair = run_check("digits_strategy", honest())  # the instructor's digits are fair to an honest answer
    assert fair.passed is True, fair.feedback


def test_a_folder_in_the_course_layout_loads_anonymously(tmp_path):
    make_fake_eurosat(tmp_path / "instructor" / "eurosat", per_class=2)
    instructor_digits(tmp_path / "instructor")
    found = private_data.load_private_data(tmp_path / "instructor")
    assert len(found.eurosat) == 20 and found.eurosat.images.shape[1:] == (3, 64, 64)
    assert found.eurosat.labels.tolist() == [k for k in range(10) for _ in range(2)]
    assert not any(cls in f or ".jpg" in f for f in found.eurosat.files for cls in EUROSAT_CLASSES)
    assert found.digits[0].shape == (797, 8, 8) and found.digits[0].dtype == np.float32
    assert "20 EuroSAT images (10 classes), 797 digits" in found.describe()
    only_digits = private_data.load_private_data(instructor_digits(tmp_path / "digits-only"))
    assert only_digits.eurosat is None and "built-in held-out images are used" in only_digits.describe()


def test_one_file_made_by_the_cli_holds_the_same_data(tmp_path, capsys):
    make_fake_eurosat(tmp_path / "eurosat", per_class=1)
    instructor_digits(tmp_path / "d")
    out = tmp_path / "private.npz"
    make = [
        "private-data",
        "make",
        "--eurosat",
        str(tmp_path / "eurosat"),
        "--digits",
        str(tmp_path / "d" / "digits.npz"),
    ]
    assert main([*make, "--out", str(out)]) == 0
    assert "10 EuroSAT images (10 classes), 797 digits" in capsys.readouterr().out
    folder = private_data.load_private_data(tmp_path / "d")
    made = private_data.load_private_data(out)
    assert np.array_equal(made.digits[0], folder.digits[0]) and np.array_equal(made.digits[1], folder.digits[1])
    assert made.eurosat.labels.tolist() == list(range(10))
    assert main(["private-data", "check", str(out)]) == 0


@pytest.mark.parametrize(
    "problem,message",
    [
        ("unknown class", "are not EuroSAT classes"),
        ("digits out of range", "must lie in [0, 1]"),
        ("empty folder", "holds neither"),
        ("missing", "does not exist"),
        ("labels", "labels must be 0-9"),
    ],
)
def test_bad_private_data_is_refused_with_the_file_named(tmp_path, problem, message):
    path = tmp_path / "instructor"
    path.mkdir()
    if problem == "unknown class":
        make_fake_eurosat(path / "eurosat", per_class=1)
        (path / "eurosat" / "Forrest").mkdir()
    elif problem == "digits out of range":
        np.savez(path / "digits.npz", X=np.full((3, 8, 8), 16.0), y=np.array([1, 2, 3]))
    elif problem == "missing":
        path = tmp_path / "nowhere"
    elif problem == "labels":
        np.savez(path / "digits.npz", X=np.zeros((2, 8, 8)), y=np.array([1, 12]))
    with pytest.raises(private_data.PrivateDataError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        private_data.load_private_data(path)
    assert str(tmp_path) in str(err.value)  # the instructor is told which file


def test_what_a_check_sees_of_broken_data_names_no_file(tmp_path, monkeypatch):
    bad = tmp_path / "secret-name.npz"
    bad.write_bytes(b"not a zip")
    monkeypatch.setenv(private_data.PRIVATE_DATA_ENV, str(bad))
    with pytest.raises(private_data.PrivateDataError) as err:
        private_data.active_private_data()
    assert "secret-name" not in str(err.value) and str(tmp_path) not in str(err.value)
    feedback = run_check("digits_strategy", memoriser()).feedback
    assert "could not be loaded" in feedback and "secret-name" not in feedback


def test_checks_use_the_instructors_parts_and_the_builtin_ones_for_the_rest(tmp_path, monkeypatch):
    make_fake_eurosat(tmp_path / "instructor" / "eurosat", per_class=1)
    monkeypatch.setenv(private_data.PRIVATE_DATA_ENV, str(tmp_path / "instructor"))
    held = graded_heldout()
    assert len(held) == 10 and held.files[0] == "private/00000"
    X, y = graded_digits()  # no digits.npz: the built-in private digits
    assert np.array_equal(y, private_digits()[1])
    monkeypatch.setenv(private_data.PRIVATE_DATA_ENV, "")
    assert private_data.active_private_data() is None


def test_the_grading_cell_sets_the_path_only_while_checking_and_clears_one_the_notebook_set():
    with_data = grading.grading_cell("07_when_transfer_helps_exercises", "M:", private_data="/srv/private.npz")
    without = grading.grading_cell("07_when_transfer_helps_exercises", "M:")
    assert "'/srv/private.npz'" in with_data and "/srv/private.npz" not in without
    assert without.count("_environ.pop('TL_PRIVATE_DATA', None)") == 2  # before and after the checks
    compile(with_data, "cell", "exec")


def test_grade_refuses_unusable_private_data_before_grading(tmp_path, capsys):
    sub = tmp_path / "subs" / "a_07_when_transfer_helps_exercises.ipynb"
    sub.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), sub)
    args = ["grade", str(sub.parent), "--private-data", str(tmp_path / "nowhere")]
    assert main([*args, "--out", str(tmp_path / "gb.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "gb.csv").exists()


@pytest.mark.slow
def test_the_grader_passes_the_instructors_data_to_the_check_in_the_kernel(tmp_path):
    """About 30 s: two kernels. The notebook sees no path while it runs, and cannot choose its own data."""
    own = tmp_path / "own"  # data the submission points the checks at (graded on it, the memoriser would fail)
    own.mkdir()
    np.savez(own / "digits.npz", X=np.zeros((10, 8, 8), dtype=np.float32), y=np.ones(10, dtype=np.int64))
    look_ahead = (  # memorise the instructor's digits too, if the notebook could find them while it runs
        "import os\n"
        "_path = os.environ.get('TL_PRIVATE_DATA')\n"
        "if _path:\n"
        "    _d = np.load(os.path.join(_path, 'digits.npz'))\n"
        "    _answers.update({x.astype(np.float32).tobytes(): int(v) for x, v in zip(_d['X'], _d['y'])})"
    )
    cells = [MEMORISER, look_ahead, f"os.environ['TL_PRIVATE_DATA'] = {str(own)!r}"]
    subs = tmp_path / "subs"
    subs.mkdir()
    path = subs / "mallory_07_when_transfer_helps_exercises.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells]), path)
    folder = instructor_digits(tmp_path / "instructor")

    [builtin] = grading.grade([subs], progress=False, cell_timeout=120, total_timeout=300)
    [instructor] = grading.grade(
        [subs], out=tmp_path / "gb.csv", progress=False, cell_timeout=120, total_timeout=300, private_data=folder
    )
    assert builtin.verdict == "ok" and instructor.verdict == "ok", (builtin.to_json(), instructor.to_json())
    points = {s: {c.id: c.points for c in sub.checks} for s, sub in (("builtin", builtin), ("instructor", instructor))}
    digits_column = next(c.id for c in builtin.checks if c.max_points == 4)
    # its own data file was ignored: full marks on the built-in digits it memorised...
    assert points["builtin"][digits_column] == 4, builtin.to_json()
    # ...and nothing on the instructor's
    assert points["instructor"][digits_column] == 0, instructor.to_json()
    feedback = "\n".join(p.read_text() for p in (tmp_path / "gb_feedback").glob("*.md"))
    assert "below 95%" in feedback and str(folder) not in feedback and "digits.npz" not in feedback
