"""The course site's build steps (docs/site/): reusing executed copies, static widgets, page parts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

from tests.helpers import nbval_project

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(REPO / "docs" / "site"))
    try:
        spec = importlib.util.spec_from_file_location(f"site_{name}", REPO / "docs" / "site" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "docs" / "site"))


executed = _load("executed")
build = _load("build")


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "09_demo.ipynb"
    path.parent.mkdir()
    nbformat.write(
        nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_markdown_cell("# 09 · Demo\n\nIntro."), nbformat.v4.new_code_cell("print(1)")]
        ),
        path,
    )
    return path


def _save_copy(notebook: Path, folder: Path, **record) -> Path:
    nb = nbformat.read(notebook, as_version=4)
    nb.metadata[executed.METADATA_KEY] = {**executed.execution_record(notebook, "test", 1.0), **record}
    folder.mkdir(exist_ok=True)
    nbformat.write(nb, folder / notebook.name)
    return folder / notebook.name


def test_executed_copy_is_reused_only_while_sources_match(notebook, tmp_path):
    folder = tmp_path / "executed"
    assert executed.fresh_copy(notebook, folder) is None
    copy = _save_copy(notebook, folder, mplbackend="")
    assert executed.fresh_copy(notebook, folder) == copy
    nb = nbformat.read(notebook, as_version=4)
    nb.cells[1].source = "print(2)"
    nbformat.write(nb, notebook)
    assert executed.fresh_copy(notebook, folder) is None  # the notebook changed: execute it again


def test_executed_copy_without_inline_figures_is_not_reused(notebook, tmp_path):
    _save_copy(notebook, tmp_path / "executed", mplbackend="Agg")
    assert executed.fresh_copy(notebook, tmp_path / "executed") is None


def test_record_names_date_device_and_torch(notebook):
    record = executed.execution_record(notebook, "test", 2.0)
    assert record["date"].endswith("UTC") and "torch " in record["device"] and "cores" in record["device"]


def test_widgets_are_rendered_statically():
    bar = nbformat.v4.new_output(
        "display_data",
        data={
            build.WIDGET_MIME: {"model_id": "a"},
            "text/plain": "epoch 1/5:  40%|####      | 4/10 [00:01<00:02, 3.1it/s]",
        },
    )
    slider = nbformat.v4.new_output(
        "display_data",
        data={build.WIDGET_MIME: {"model_id": "b"}, "text/plain": "interactive(children=(FloatSlider(value=1.0),))"},
    )
    text = nbformat.v4.new_output("stream", name="stdout", text="accuracy 0.97\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[bar, slider, text])])
    build.static_widgets(nb)
    outputs = nb.cells[0].outputs
    assert len(outputs) == 2 and build.WIDGET_MIME not in outputs[0].data
    assert "interactive widget" in outputs[0].data["text/html"] and outputs[1].text == "accuracy 0.97\n"


def test_every_page_gets_provenance_and_credits(notebook):
    nb = nbformat.read(notebook, as_version=4)
    record = executed.execution_record(notebook, "test", 2.0)
    build.decorate(nb, record)
    assert nb.cells[0].source.startswith("# 09 · Demo")
    assert record["date"] in nb.cells[1].source and record["device"] in nb.cells[1].source
    assert "MIT licence" in nb.cells[-1].source and "Apache-2.0" in nb.cells[-1].source
    assert build.title_of(nb, "x") == "09 · Demo"


@pytest.mark.slow
def test_nbval_run_saves_executed_copy_with_figures(tmp_path):
    """The root conftest writes what nbval executed (figures inline even under MPLBACKEND=Agg)."""
    import os
    import subprocess

    nbval_project(tmp_path)
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Demo"),
            nbformat.v4.new_code_cell("print('hello')"),
            nbformat.v4.new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2]); plt.show()"),
            nbformat.v4.new_code_cell("6 * 7"),
        ]
    )
    nbformat.write(nb, tmp_path / "notebooks" / "a.ipynb")
    env = {**os.environ, "TL_SAVE_EXECUTED": str(tmp_path / "executed"), "MPLBACKEND": "Agg"}
    r = subprocess.run(
        [
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
            "notebooks",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    saved = nbformat.read(tmp_path / "executed" / "a.ipynb", as_version=4)
    code = [c for c in saved.cells if c.cell_type == "code"]
    assert code[0].outputs[0].text == "hello\n"
    assert any("image/png" in o.get("data", {}) for o in code[1].outputs)
    assert code[2].outputs[0].data["text/plain"] == "42"
    assert saved.metadata[executed.METADATA_KEY]["mplbackend"] == ""
    nbformat.validate(saved)
