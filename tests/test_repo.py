"""Repository hygiene: notebooks stored clean, one source of versions, layered imports."""

import ast
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIRS = ("notebooks", "exercises", "solutions")


def _notebooks():
    return sorted(p for d in NOTEBOOK_DIRS for p in (REPO / d).glob("*.ipynb"))


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: str(p.relative_to(REPO)))
def test_notebook_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have stored outputs; clear them before committing"


def test_environment_yml_installs_pyproject_without_own_pins():
    env = (REPO / "environment.yml").read_text()
    assert "-e .[dev]" in env
    assert not re.search(r"torch|timm|jupyterlab", env.split("pip:")[1]), "versions belong in pyproject.toml"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"torch==2.14.1"' in pyproject and '"torchvision==0.29.1"' in pyproject


LAYERS = {  # module -> tl_helpers modules it may import
    "paths": set(), "files": set(), "device": set(),
    "getting_data": {"paths"}, "data": {"files", "getting_data", "paths"}, "models": {"paths"},
    "train": {"device", "files"}, "features": {"data", "device", "files", "models", "paths"},
    "plots": {"train"},
}


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_layering(module):
    tree = ast.parse((REPO / "tl_helpers" / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tl_helpers."):
            imported.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            imported |= {a.name.split(".")[1] for a in node.names if a.name.startswith("tl_helpers.")}
    assert imported <= LAYERS[module], f"{module} imports {imported - LAYERS[module]}"


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
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
            "--nbval-current-env", "--rootdir", str(tmp_path)]
    partial = subprocess.run(args + ["notebooks/a_ok.ipynb"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=240)
    assert partial.returncode != 0, partial.stdout
    assert "1 of 2 notebooks ran and passed" in partial.stdout
    assert "b_not_run.ipynb" in partial.stdout
    full = subprocess.run(args + ["notebooks"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=240)
    assert full.returncode == 0, full.stdout
    assert "all 2 notebooks executed and passed" in full.stdout
