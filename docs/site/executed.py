"""Executed copies of the course notebooks, shared by the notebook tests and the site build.

``make test`` (nbval) can save the outputs it produced for each notebook (set
``TL_SAVE_EXECUTED=<folder>``; the root ``conftest.py`` does it), and ``make site`` renders those
copies instead of executing the notebooks a second time. A copy is used only when its key matches:
the sha256 of the notebook file and of every ``tl_helpers/*.py`` file, so editing a notebook or the
package makes the copy stale and the site build executes that notebook itself.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
METADATA_KEY = "tl_executed"


def source_key(notebook: Path) -> str:
    """sha256 over the notebook file and the package code it runs."""
    h = hashlib.sha256()
    h.update(Path(notebook).read_bytes())
    for py in sorted((REPO / "tl_helpers").glob("*.py")):
        h.update(py.name.encode() + b"\0" + py.read_bytes())
    return h.hexdigest()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description() -> str:
    """CPU model and core count, GPU name when there is one, and the torch version."""
    import torch

    cpu = f"{cpu_name()} ({os.cpu_count()} cores)"
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        gpu = "Apple MPS"
    else:
        gpu = "no GPU"
    return f"{cpu}, {gpu}; torch {torch.__version__}"


def execution_record(notebook: Path, executor: str, seconds: float, mplbackend: str | None = None) -> dict:
    """What the site shows about an execution; ``mplbackend``: the kernel's (default: this process's)."""
    return {
        "key": source_key(notebook),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_description(),
        "executor": executor,
        "mplbackend": os.environ.get("MPLBACKEND", "") if mplbackend is None else mplbackend,
        "seconds": round(seconds, 1),
    }


def fresh_copy(notebook: Path, folder: Path | None) -> Path | None:
    """The executed copy of ``notebook`` in ``folder`` when it matches the current sources."""
    if folder is None:
        return None
    copy = Path(folder) / Path(notebook).name
    if not copy.is_file():
        return None
    import nbformat

    nb = nbformat.read(copy, as_version=4)
    record = nb.metadata.get(METADATA_KEY, {})
    if not inline_figures(record.get("mplbackend", "")):
        return None  # executed with e.g. MPLBACKEND=Agg: its figures were never displayed
    return copy if record.get("key") == source_key(notebook) else None


def inline_figures(mplbackend: str) -> bool:
    """Whether a kernel started with this MPLBACKEND shows figures inline (ipykernel's default when unset)."""
    return not mplbackend or "inline" in mplbackend
