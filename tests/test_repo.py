"""Repository hygiene: notebooks stored clean, one source of versions, layered imports."""

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIRS = ("notebooks", "exercises", "solutions")


def _notebooks():
    return sorted(p for d in NOTEBOOK_DIRS for p in (REPO / d).glob("*.ipynb"))


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: str(p.relative_to(REPO)))
def test_notebook_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} have stored outputs; clear them before committing"


def test_environment_yml_installs_pyproject_without_own_pins():
    env = (REPO / "environment.yml").read_text()
    assert "-e .[dev]" in env
    assert not re.search(r"torch|timm|jupyterlab", env.split("pip:")[1]), "versions belong in pyproject.toml"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"torch==2.14.1"' in pyproject and '"torchvision==0.29.1"' in pyproject


PACKAGE = REPO / "tl_helpers"
# modules and sub-packages: "checks" is tl_helpers/checks/__init__.py, "checks.core" its module core.py
MODULES = sorted(
    [p.stem for p in PACKAGE.glob("*.py")]
    + [p.parent.name for p in PACKAGE.glob("*/__init__.py")]
    + [f"{p.parent.name}.{p.stem}" for p in PACKAGE.glob("*/*.py") if p.stem != "__init__"]
)


def module_file(module: str) -> Path:
    if "." in module:
        return PACKAGE / (module.replace(".", "/") + ".py")
    return PACKAGE / module / "__init__.py" if (PACKAGE / module).is_dir() else PACKAGE / f"{module}.py"


_FLOOR = {"device", "files", "paths"}
LAYERS = {  # module -> the tl_helpers modules it may import
    "__init__": set(),
    # the floor: nothing from the package
    "paths": set(),
    "files": set(),
    "device": set(),
    "runner": set(),  # runs a notebook under limits; no torch, nothing of the course
    "quiz": set(),  # multiple-choice questions in the notebooks
    "depthwise": set(),  # depthwise convolutions with a CPU-fast weight gradient (torch and timm only)
    "pointwise": set(),  # 1x1 convolutions as a matrix product on small CPU feature maps (torch only)
    # data and models (and, later, text) stand on the floor, independent of each other
    "getting_data": {"paths"},  # what to do when the data is missing (messages only)
    "archive": {"files", "getting_data", "paths"},
    "data": {"archive"} | _FLOOR,
    "models": {"depthwise", "pointwise"} | _FLOOR,
    "text": _FLOOR,  # notebook 08: language data, encoder and embeddings
    "private_data": {"data"} | _FLOOR,  # the instructor's data for grading outcome exercises
    "exercises": {"paths"},
    "plots": set(),
    # built on them
    "train": _FLOOR,
    "features": {"data", "models"} | _FLOOR,
    # on top
    "checks": {"data", "models", "features", "text", "train", "private_data"} | _FLOOR,
    "grading": {"checks", "runner", "private_data"} | _FLOOR,
    "ddp": {"data", "models", "train"} | _FLOOR,
    # `adapt`: the course's decision as a command (notebook 09), on data, models, features and train
    "adapt": {"archive", "data", "models", "features", "train"} | _FLOOR,
    "cli": {"archive", "data", "getting_data", "models", "grading", "exercises", "runner", "private_data"}
    | {"adapt", "text"}
    | _FLOOR,
    "__main__": {"cli"},
}


def package_imports(tree: ast.AST) -> tuple[set[str], list[str]]:
    """The tl_helpers modules a module imports, and its uses of other modules' private names.

    Catches ``import tl_helpers.x``, ``from tl_helpers.x import y``, ``from tl_helpers import x``
    and relative imports, at any depth (inside functions too); a private name is ``_name``
    imported from, or read as an attribute of, a tl_helpers module.
    """
    imported: set[str] = set()
    private: list[str] = []
    aliases: dict[str, str] = {}  # local name -> tl_helpers module
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "tl_helpers" and len(parts) > 1:
                    imported.add(parts[1])
                    if alias.asname:
                        aliases[alias.asname] = parts[1]
        elif isinstance(node, ast.ImportFrom):
            parts = (node.module or "").split(".") if node.module else []
            if node.level == 0 and (not parts or parts[0] != "tl_helpers"):
                continue
            submodule = parts[1] if node.level == 0 and len(parts) > 1 else (parts[0] if node.level and parts else None)
            if submodule is None:  # from tl_helpers import x, y  /  from . import x
                for alias in node.names:
                    imported.add(alias.name)
                    aliases[alias.asname or alias.name] = alias.name
            else:
                imported.add(submodule)
                private += [
                    f"{submodule}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            private.append(f"{aliases[node.value.id]}.{node.attr}")
    return imported, private


@pytest.mark.parametrize("module", MODULES)
def test_layering(module):
    layer = module.split(".")[0]  # a sub-package's modules share its layer
    assert layer in LAYERS, f"tl_helpers/{module}.py is not placed in a layer: add it to LAYERS in {__file__}"
    imported, private = package_imports(ast.parse(module_file(module).read_text()))
    imported.discard(layer)
    assert imported <= LAYERS[layer], f"{module} imports {sorted(imported - LAYERS[layer])}"
    assert not private, f"{module} uses private names of other modules: {private} (make what is shared public)"


def test_layering_detector_sees_every_import_style():
    source = textwrap.dedent("""
        import tl_helpers.data
        import tl_helpers.models as m
        from tl_helpers import train, features as feats
        from tl_helpers.files import atomic_path, _write_error
        def f():
            from tl_helpers.paths import data_dir
            return feats._secret, m.__name__
    """)
    imported, private = package_imports(ast.parse(source))
    assert imported == {"data", "models", "train", "features", "files", "paths"}
    assert sorted(private) == ["features._secret", "files._write_error"]


def test_every_module_has_all_naming_only_its_names():
    import importlib

    for module in MODULES:
        if module.startswith("__"):
            continue
        mod = importlib.import_module(f"tl_helpers.{module}")
        names = getattr(mod, "__all__", None)
        assert names is not None, f"tl_helpers.{module} has no __all__"
        assert len(set(names)) == len(names), f"tl_helpers.{module}.__all__ repeats a name"
        missing = [n for n in names if not hasattr(mod, n)]
        assert not missing, f"tl_helpers.{module}.__all__ names {missing}, which it does not define"


def test_package_is_typed():
    assert (PACKAGE / "py.typed").is_file()


def test_importing_every_module_has_no_side_effects():
    """Importing any module: no RNG touched, no device or thread settings, no matplotlib backend chosen."""
    modules = [f"tl_helpers.{m}" for m in MODULES if not m.startswith("__")]
    code = textwrap.dedent(f"""
        import importlib, os, random, sys
        import numpy, torch
        state = torch.random.get_rng_state().clone(); r = random.getstate(); n = numpy.random.get_state()[1].copy()
        threads, cwd, files = torch.get_num_threads(), os.getcwd(), sorted(os.listdir("."))
        dtype = torch.get_default_dtype()
        for name in ["tl_helpers"] + {modules!r}:
            importlib.import_module(name)
        assert torch.equal(state, torch.random.get_rng_state()), "torch RNG touched"
        assert r == random.getstate() and (n == numpy.random.get_state()[1]).all(), "RNG touched"
        assert torch.get_num_threads() == threads and torch.get_default_dtype() == dtype
        assert os.getcwd() == cwd and sorted(os.listdir(".")) == files, "files written at import"
        assert "matplotlib.pyplot" not in sys.modules, "a module imported pyplot (it picks a backend)"
        import tl_helpers.device
        assert not [k for k in vars(tl_helpers.device) if k.lower() in ('device', 'default_device')]
        print('clean')
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "clean" in r.stdout, r.stderr


def test_cli_help_does_not_import_torch():
    code = textwrap.dedent("""
        import runpy, sys
        for argv in (["--help"], ["grade", "--help"], ["data", "prepare", "--help"]):
            sys.argv = ["tl_helpers", *argv]
            try:
                runpy.run_module("tl_helpers", run_name="__main__", alter_sys=True)
            except SystemExit as exit:
                assert exit.code == 0, exit.code
        heavy = sorted(m for m in ("torch", "numpy", "tl_helpers.data", "tl_helpers.checks") if m in sys.modules)
        assert not heavy, heavy
        print("light")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip().endswith("light"), r.stdout[-2000:] + r.stderr


@pytest.mark.slow
def test_notebook_count_check_fails_when_a_notebook_did_not_run(tmp_path):
    """The root conftest's TL_REQUIRE_ALL_NOTEBOOKS check really sees nbval items (and fails)."""
    import shutil
    import subprocess
    import sys

    import nbformat

    shutil.copy(REPO / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "notebooks").mkdir()
    for name in ("a_ok.ipynb", "b_not_run.ipynb"):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("assert 1 + 1 == 2")])
        nbformat.write(nb, tmp_path / "notebooks" / name)
    env = {**__import__("os").environ, "TL_REQUIRE_ALL_NOTEBOOKS": "1"}
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--nbval-lax",
        "--nbval-current-env",
        "--rootdir",
        str(tmp_path),
    ]
    partial = subprocess.run(
        args + ["notebooks/a_ok.ipynb"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert partial.returncode != 0, partial.stdout
    assert "1 of 2 notebooks ran and passed" in partial.stdout
    assert "b_not_run.ipynb" in partial.stdout
    full = subprocess.run(args + ["notebooks"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert full.returncode == 0, full.stdout
    assert "all 2 notebooks executed and passed" in full.stdout


def test_readme_module_table_names_every_module():
    readme = (REPO / "README.md").read_text()
    listed = set(re.findall(r"^\| `([a-z_]+)` \|", readme, flags=re.M))
    modules = {m for m in MODULES if not m.startswith("__") and "." not in m}
    assert modules <= listed, f"modules missing from the README's tl_helpers table: {sorted(modules - listed)}"
