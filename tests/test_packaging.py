"""The package as learners install it: a wheel, or ``pip install "tl-helpers @ git+URL"``, never editable.

The wheel is built offline from a copy of the checkout (pip writes ``build/`` into the folder it builds)
and must hold every module of ``tl_helpers`` (``tl_helpers.checks`` included) and ``py.typed``. It is then
installed, without ``-e``, into a fresh virtual environment, where ``doctor``, an exercise's ``check`` and
``hint`` and ``grade`` run from the installed copy, never from this checkout.

The hosted-notebook recipe of the README (section "Online, or in a hosted notebook service") is tested
as written, apart from the download: ``pip install "tl-helpers @ git+URL"`` (here the URL of a local git
repository made from this checkout, with ``--no-deps --no-index --no-build-isolation`` because nothing
may be downloaded), then ``TL_ALLOW_DOWNLOAD=1`` and ``python -m tl_helpers doctor``.

A fresh environment cannot download torch: its dependencies are made visible without installing them,
through a ``.pth`` file naming a folder of links to this environment's installed packages, all but
``tl_helpers`` itself (so neither its editable finder nor its metadata can leak in).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nbformat
import pytest

from tests.helpers import REPO, real_archive

# What a clone of the repository holds that the build reads (the notebooks, tests and docs play no part).
BUILD_INPUTS = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in", "README.md", "LICENSE")
CHEAP_SOLUTION = "03_freezing_exercises"  # loads the data and a backbone, trains nothing


def package_files(root: Path) -> set[str]:
    """``tl_helpers/**/*.py`` and ``py.typed`` under ``root``, as posix paths relative to it."""
    found = {p.relative_to(root).as_posix() for p in (root / "tl_helpers").rglob("*.py")}
    found |= {p.relative_to(root).as_posix() for p in (root / "tl_helpers").rglob("py.typed")}
    return {f for f in found if "__pycache__" not in f}


def copy_checkout(target: Path) -> Path:
    """Copy what the build needs from this checkout into ``target`` (no caches, no build leftovers)."""
    target.mkdir(parents=True)
    for name in BUILD_INPUTS:
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, target / name)
    shutil.copytree(REPO / "tl_helpers", target / "tl_helpers", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def pip(python: Path, *args: str) -> None:
    """Run this environment's pip for the environment of ``python``; offline, no dependencies."""
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", "--no-input"]
    proc = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def dependencies_folder(target: Path) -> Path:
    """A folder of links to this environment's installed packages, all but tl_helpers and all ``.pth`` files."""
    target.mkdir(parents=True)
    sources = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    for source in map(Path, sources):
        for entry in source.iterdir():
            name = entry.name
            if name.endswith(".pth") or name.startswith(("__editable__", "tl_helpers", "tl-helpers", "__pycache__")):
                continue
            if not (target / name).exists():
                (target / name).symlink_to(entry, target_is_directory=entry.is_dir())
    return target


class FreshEnv:
    """A new virtual environment whose dependencies come from a folder of links (see the module docstring)."""

    def __init__(self, root: Path, dependencies: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
        self.root = root
        self.bin = root / ("Scripts" if os.name == "nt" else "bin")
        self.python = self.bin / ("python.exe" if os.name == "nt" else "python")
        code = "import sysconfig; print(sysconfig.get_path('purelib'))"
        self.site = Path(subprocess.check_output([str(self.python), "-c", code], text=True).strip())
        (self.site / "course_dependencies.pth").write_text(f"{dependencies}\n")
        self.home = root.parent / f"{root.name}-home"  # the working folder of every command: no tl_helpers in it
        self.home.mkdir()

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a command run "inside" this venv (as if activated), nothing of the course set."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TL_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "JUPYTER_PATH")
        }
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", "")])
        env["VIRTUAL_ENV"] = str(self.root)
        env["JUPYTER_DATA_DIR"] = str(self.home / "jupyter")  # no kernel specs of this machine's user
        env["TL_DATA_DIR"] = str(self.home / "data")  # empty unless a test says otherwise
        return {**env, **extra}

    def run(self, *args: str, timeout: int = 600, **extra: str) -> subprocess.CompletedProcess[str]:
        """``python *args`` in this environment, from its own empty working folder."""
        return subprocess.run(
            [str(self.python), *args],
            cwd=self.home,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def assert_installed_here(self) -> None:
        """tl_helpers and its subpackages are imported from this environment's site-packages, not the checkout."""
        code = "import json, tl_helpers, tl_helpers.checks as c; print(json.dumps([tl_helpers.__file__, c.__file__]))"
        proc = self.run("-c", code, timeout=120)
        assert proc.returncode == 0, proc.stderr
        for file in map(Path, json.loads(proc.stdout)):
            assert file.resolve().is_relative_to(self.site.resolve()), file
            assert not file.resolve().is_relative_to(REPO.resolve()), file
        assert package_files(self.site) == package_files(REPO)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = copy_checkout(work / "checkout")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    proc = subprocess.run(
        cmd + ["--disable-pip-version-check", "-w", str(work / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = (work / "dist").glob("tl_helpers-*.whl")
    return built


@pytest.fixture(scope="module")
def dependencies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.name == "nt":
        pytest.skip("the folder of links to the installed packages needs symbolic links (Linux, macOS, WSL)")
    return dependencies_folder(tmp_path_factory.mktemp("deps") / "site-packages")


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory: pytest.TempPathFactory, wheel: Path, dependencies: Path) -> FreshEnv:
    env = FreshEnv(tmp_path_factory.mktemp("fresh") / "venv", dependencies)
    pip(env.python, "install", "--no-deps", "--no-index", str(wheel))
    return env


def test_wheel_holds_every_module_and_the_type_marker(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = package_files(REPO)
    assert {"tl_helpers/checks/__init__.py", "tl_helpers/py.typed"} <= expected
    assert expected - names == set(), "left out of the wheel"
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info/"  # tl_helpers-0.1.0.dist-info/
    assert all(n.startswith(("tl_helpers/", dist_info)) for n in names), sorted(names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "tl-helpers = tl_helpers.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


@pytest.mark.slow
def test_installed_wheel_runs_checks_hints_and_doctor(wheel_env):
    from tl_helpers.checks import CHECKS, HINTS

    wheel_env.assert_installed_here()
    script = """
import json
from tl_helpers import models
from tl_helpers.checks import CHECKS, HINTS, check, hint

model = models.load_backbone("efficientnet_lite0", pretrained=False, num_classes=10)
wrong = check("freeze_backbone", model)  # nothing frozen yet
for param in model.parameters():
    param.requires_grad = False
for param in model.get_classifier().parameters():
    param.requires_grad = True
right = check("freeze_backbone", model)
exercise = "freeze_backbone" if "freeze_backbone" in HINTS else "freeze_by_hand"
print(json.dumps({"wrong": wrong.passed, "right": right.passed, "hint": hint(exercise),
                  "checks": sorted(CHECKS), "hints": sorted(HINTS)}))
"""
    proc = wheel_env.run("-c", script)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["wrong"] is False and result["right"] is True
    assert result["hint"].strip()
    assert result["checks"] == sorted(CHECKS) and result["hints"] == sorted(HINTS)

    # the console script, and doctor: weights found in the installed packages; no data here, so "not ready"
    proc = subprocess.run(
        [str(wheel_env.bin / "tl-helpers"), "--help"], capture_output=True, text=True, env=wheel_env.env()
    )
    assert proc.returncode == 0 and "doctor" in proc.stdout, proc.stderr
    proc = wheel_env.run("-m", "tl_helpers", "doctor")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "OK weights" in proc.stdout and "!! data" in proc.stdout and "NOT READY" in proc.stdout, proc.stdout


@pytest.mark.slow
@pytest.mark.real_data
@pytest.mark.skipif(os.name == "nt", reason="grade needs Linux, macOS or WSL")
def test_installed_wheel_grades_a_solution_in_its_own_kernel(wheel_env, tmp_path):
    from tl_helpers import paths
    from tl_helpers.checks import total_points

    nb = nbformat.read(REPO / "solutions" / f"{CHEAP_SOLUTION}.ipynb", as_version=4)
    site, prefix = os.path.realpath(wheel_env.site), os.path.realpath(wheel_env.root)
    first = f"""import os, sys
import tl_helpers.checks
assert os.path.realpath(sys.prefix) == {prefix!r}, sys.prefix  # the kernel runs the fresh environment's python
assert os.path.realpath(tl_helpers.checks.__file__).startswith({site!r}), tl_helpers.checks.__file__"""
    nb.cells.insert(0, nbformat.v4.new_code_cell(first))
    submission = tmp_path / "class" / f"learner_{CHEAP_SOLUTION}.ipynb"
    submission.parent.mkdir()
    nbformat.write(nb, submission)
    archive = real_archive()
    assert archive is not None  # the real_data marker skipped the test otherwise
    proc = wheel_env.run(
        "-m",
        "tl_helpers",
        "grade",
        str(submission),
        "--json",
        "--cell-timeout=300",
        "--total-timeout=580",
        timeout=600,
        TL_DATA_DIR=str(paths.data_dir()),  # the checkout's data folder: extracted once, shared with the notebooks
        TL_EUROSAT_ARCHIVE=str(archive),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (result,) = json.loads(proc.stdout)
    assert result["verdict"] == "ok", result
    assert result["score"] == result["max_score"] == total_points(CHEAP_SOLUTION), result


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="needs git (pip clones the repository with it)")
def test_hosted_notebook_recipe_installs_from_git_and_doctor_is_ready(tmp_path, dependencies):
    repo = copy_checkout(tmp_path / "course")
    git = ["git", "-c", "user.name=course", "-c", "user.email=course@localhost", "-c", "init.defaultBranch=main"]
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the course"]):
        subprocess.run(git + args, cwd=repo, env=env, check=True, capture_output=True, timeout=60)
    fresh = FreshEnv(tmp_path / "venv", dependencies)
    # README: %pip install --quiet "tl-helpers @ git+{COURSE}"  (offline here: no dependencies, no index)
    requirement = f"tl-helpers @ git+{repo.as_uri()}"
    pip(fresh.python, "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation", requirement)
    fresh.assert_installed_here()
    # README: os.environ["TL_ALLOW_DOWNLOAD"] = "1"; !python -m tl_helpers doctor
    proc = fresh.run("-m", "tl_helpers", "doctor", TL_ALLOW_DOWNLOAD="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK weights" in proc.stdout and "downloaded on first use" in proc.stdout and "READY" in proc.stdout
