"""Batch grading: ``python -m tl_helpers grade PATH... [--out gradebook.csv] [--json]``.

Each submission runs in its own fresh kernel, in a temporary folder holding a copy
of the notebook (so a submission that deletes files harms nothing), with a
per-cell and a total timeout and a cap on the output kept per cell. Errors in
cells are allowed (a learner's unfinished exercise costs that exercise only).

Nothing the submission prints or reports is trusted: after its last cell the
grader appends its own cell, which purges ``tl_helpers`` from ``sys.modules``,
imports :mod:`tl_helpers.checks` fresh (so a redefined or monkeypatched
``check`` is never used), runs each graded check of the assignment on the
notebook variables it declares (with a time limit per check), and prints the
results after a random marker generated for this run. Points come from the
grader's own registry, never from the kernel. A submission that hangs, kills its
kernel or floods its output gets a verdict and only the points it really earned.

Limit: checks run inside the submission's kernel; code that rewrites the Python
interpreter itself (``builtins``, ``torch`` internals) could still mislead them.
For high-stakes grading, read the flagged notebooks.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tl_helpers.checks import ASSIGNMENTS, CHECKS

CELL_TIMEOUT = 120
TOTAL_TIMEOUT = 600
CHECK_TIMEOUT = 30
OUTPUT_CAP = 200_000  # characters of output kept per cell
_TRUNCATED = "[output truncated by the grader]\n"


@dataclass
class CheckOutcome:
    id: str
    passed: bool
    points: int
    max_points: int
    feedback: str


@dataclass
class Submission:
    submission: str
    assignment: str | None
    checks: list[CheckOutcome] = field(default_factory=list)
    verdict: str = "ok"
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def score(self) -> int:
        return sum(c.points for c in self.checks)

    @property
    def max_score(self) -> int:
        return sum(c.max_points for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"submission": self.submission, "assignment": self.assignment, "score": self.score,
                "max_score": self.max_score, "verdict": self.verdict, "notes": self.notes,
                "seconds": round(self.seconds, 1),
                "checks": [{"id": c.id, "passed": c.passed, "points": c.points, "max_points": c.max_points,
                            "feedback": c.feedback} for c in self.checks]}


# ----------------------------------------------------------------------------- finding submissions

def find_submissions(paths: Sequence[str | os.PathLike]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist. Fix: give notebooks or folders of notebooks.")
    return found


def assignment_of(path: Path, notebook: Any = None) -> str | None:
    """The assignment a notebook answers: by file name (``alice_03_freezing_exercises.ipynb`` works), else metadata."""
    name = path.stem
    for key in sorted(ASSIGNMENTS, key=len, reverse=True):
        if key in name:
            return key
    for key in ASSIGNMENTS:  # "03_freezing" in a renamed file
        if name.startswith(key[:2]) or key.split("_exercises")[0] in name:
            return key
    meta = (notebook or {}).get("metadata", {}).get("tl_course", {}) if notebook is not None else {}
    key = meta.get("assignment") if isinstance(meta, dict) else None
    return key if key in ASSIGNMENTS else None


# ----------------------------------------------------------------------------- the grader's cell

def grading_cell(assignment: str, marker: str, check_timeout: int = CHECK_TIMEOUT) -> str:
    spec = [(col, cid, list(names)) for col, cid, names in ASSIGNMENTS[assignment]]
    package_parent = str(Path(__file__).resolve().parents[1])
    trusted_path = [package_parent] + [p for p in sys.path if p and Path(p).resolve() != Path.cwd().resolve()]
    return f'''
def _tl_grade():
    import sys as _sys
    _sys.path[:] = {trusted_path!r}  # never import a tl_helpers the submission wrote into its folder
    for _name in [n for n in list(_sys.modules) if n == "tl_helpers" or n.startswith("tl_helpers.")
                  or n in ("json", "json.encoder", "json.decoder", "json.scanner", "signal")]:
        del _sys.modules[_name]
    import importlib as _importlib
    _json = _importlib.import_module("json")
    _signal = _importlib.import_module("signal")
    _checks = _importlib.import_module("tl_helpers.checks")
    _ns = globals()
    _out = []

    def _alarm(*_):
        raise TimeoutError("check timed out")

    for _col, _cid, _names in {spec!r}:
        _missing = [n for n in _names if n not in _ns]
        if _missing:
            _out.append([_col, False, "not defined: " + ", ".join(_missing)])
            continue
        try:
            _signal.signal(_signal.SIGALRM, _alarm)
            _signal.alarm({check_timeout})
            try:
                _r = _checks.run_check(_cid, *[_ns[n] for n in _names])
            finally:
                _signal.alarm(0)
            _out.append([_col, bool(_r.passed is True), str(_r.feedback)[:2000]])
        except BaseException as _exc:
            _out.append([_col, False, "check stopped: " + type(_exc).__name__ + ": " + str(_exc)[:500]])
    _sys.stdout.write("\\n{marker}" + _json.dumps(_out) + "\\n")
    _sys.stdout.flush()

_tl_grade()
del _tl_grade
'''


# ----------------------------------------------------------------------------- running one notebook

def _capped_client(nb: Any, cwd: str, cell_timeout: int):
    from nbclient import NotebookClient

    class CappedClient(NotebookClient):
        """Keeps at most OUTPUT_CAP characters of output per cell."""

        def output(self, outs, msg, display_id, cell_index):  # type: ignore[override]
            if any(o.get("text") == _TRUNCATED for o in outs):
                return None
            used = sum(len(json.dumps(o.get("text", o.get("data", "")))) for o in outs)
            content = msg.get("content", {})
            incoming = len(json.dumps(content.get("text", content.get("data", ""))))
            if used + incoming > OUTPUT_CAP:
                if msg.get("msg_type") == "stream" and used < OUTPUT_CAP:
                    content["text"] = str(content.get("text", ""))[: OUTPUT_CAP - used]
                    super().output(outs, msg, display_id, cell_index)
                if not outs or outs[-1].get("text") != _TRUNCATED:
                    from nbformat.v4 import new_output

                    outs.append(new_output("stream", name="stderr", text=_TRUNCATED))
                return None
            return super().output(outs, msg, display_id, cell_index)

    return CappedClient(nb, timeout=cell_timeout, allow_errors=True, interrupt_on_timeout=True,
                        kernel_name="python3", resources={"metadata": {"path": cwd}}, record_timing=False,
                        iopub_timeout=10, shutdown_kernel="immediate")


def run_notebook(path: str, assignment: str, marker: str, cell_timeout: int, result_file: str) -> None:
    """Worker (its own process): execute the copy, append the grading cell, write a JSON summary."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    for cell in cells:
        cell.outputs = []
    nb.cells = [c for c in nb.cells if c.cell_type == "code"]
    nb.cells.append(nbformat.v4.new_code_cell(grading_cell(assignment, marker)))
    summary: dict[str, Any] = {"events": [], "results": None}

    def save() -> None:
        Path(result_file).write_text(json.dumps(summary))

    client = _capped_client(nb, os.path.dirname(path), cell_timeout)
    try:
        with client.setup_kernel():
            provisioner = getattr(client.km, "provisioner", None)
            summary["kernel_pid"] = getattr(provisioner, "pid", None)
            summary["kernel_pgid"] = getattr(provisioner, "pgid", None)
            save()
            for index, cell in enumerate(nb.cells):
                last = index == len(nb.cells) - 1
                try:
                    client.execute_cell(cell, index)
                except Exception as exc:  # DeadKernelError, CellTimeoutError...
                    summary["events"].append(f"cell {index + 1}: {type(exc).__name__}: {str(exc)[:200]}")
                    save()
                    if "Dead" in type(exc).__name__ or not client.kc or not client.km.is_alive():
                        summary["events"].append(f"the kernel died in cell {index + 1}")
                        break
                for out in cell.get("outputs", []):
                    if out.get("output_type") == "error" and not last:
                        ename = out.get("ename")
                        summary["events"].append(f"cell {index + 1} timed out and was interrupted"
                                                 if ename == "KeyboardInterrupt" else f"cell {index + 1} raised {ename}")
                if last:
                    for out in cell.get("outputs", []):
                        for line in str(out.get("text", "")).splitlines():
                            if line.startswith(marker):
                                summary["results"] = json.loads(line[len(marker):])
                save()
    except Exception as exc:
        summary["events"].append(f"kernel error: {type(exc).__name__}: {str(exc)[:200]}")
    save()


def grade_notebook(path: Path, *, cell_timeout: int = CELL_TIMEOUT, total_timeout: int = TOTAL_TIMEOUT,
                   name: str | None = None) -> Submission:
    """Grade one submission in a fresh kernel process. Never raises for a bad submission."""
    import nbformat

    t0 = time.perf_counter()
    label = name or str(path)
    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as exc:
        sub = Submission(label, assignment_of(path), verdict="unreadable", notes=[f"not a notebook: {exc}"])
        _fill_missing(sub, "the notebook could not be read")
        return sub
    assignment = assignment_of(path, nb)
    sub = Submission(label, assignment)
    if assignment is None:
        sub.verdict = "unknown assignment"
        sub.notes.append("the file name does not name an exercise notebook (e.g. 03_freezing_exercises)")
        return sub
    marker = "TLGRADE" + secrets.token_hex(16) + ":"
    with tempfile.TemporaryDirectory(prefix="tl-grade-") as tmp, \
            tempfile.TemporaryDirectory(prefix="tl-result-") as private:
        work = Path(tmp) / "work"  # the submission's copy; its neighbours hold nothing of the grader's
        work.mkdir()
        copy = work / path.name
        shutil.copyfile(path, copy)
        result_file = Path(private) / f"{secrets.token_hex(8)}.json"
        cmd = [sys.executable, "-m", "tl_helpers.grading", "_run", str(copy), assignment, marker,
               str(cell_timeout), str(result_file)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        timed_out = False
        try:
            _, err = proc.communicate(timeout=total_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            _, err = proc.communicate()
        summary: dict[str, Any] = {"events": [], "results": None}
        if result_file.is_file():
            try:
                summary = json.loads(result_file.read_text())
            except ValueError:
                pass
        _kill_group(proc)
        _kill_kernel(summary)  # a kernel left running (its own session) after a total timeout
    sub.notes += summary.get("events", [])[:20]
    if timed_out:
        sub.verdict = f"timed out after {total_timeout}s"
    elif any("died" in e for e in sub.notes):
        sub.verdict = "kernel died"
    elif summary.get("results") is None:
        sub.verdict = "grading cell did not report"
        tail = (err or b"").decode(errors="replace").strip().splitlines()[-3:]
        sub.notes += tail
    elif any("CellTimeoutError" in e or "timed out" in e for e in sub.notes):
        sub.verdict = "a cell timed out"
    elif any("raised" in e for e in sub.notes):
        sub.verdict = "errors in cells"
    results = {}
    for item in summary.get("results") or []:
        if isinstance(item, list) and len(item) == 3 and isinstance(item[0], str):
            results.setdefault(item[0], (item[1] is True, str(item[2])))
    why = "; ".join(sub.notes[-3:]) or sub.verdict
    for col, cid, _ in ASSIGNMENTS[assignment]:
        max_points = CHECKS[cid].points
        if col in results:
            passed, feedback = results[col]
            if feedback.startswith("not defined") and sub.notes:
                feedback += f" (the notebook stopped or failed earlier: {why})"
        else:
            passed, feedback = False, f"not reached: {why}"
        sub.checks.append(CheckOutcome(col, passed, max_points if passed else 0, max_points, feedback))
    sub.seconds = time.perf_counter() - t0
    return sub


def _fill_missing(sub: Submission, why: str) -> None:
    if sub.assignment:
        for col, cid, _ in ASSIGNMENTS[sub.assignment]:
            sub.checks.append(CheckOutcome(col, False, 0, CHECKS[cid].points, why))


def _kill_kernel(summary: dict[str, Any]) -> None:
    pgid, pid = summary.get("kernel_pgid"), summary.get("kernel_pid")
    try:
        if isinstance(pgid, int) and pgid > 1 and pgid != os.getpgid(0):
            os.killpg(pgid, signal.SIGKILL)
        elif isinstance(pid, int) and pid > 1:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ----------------------------------------------------------------------------- many notebooks

def grade(paths: Sequence[str | os.PathLike], *, out: str | os.PathLike | None = None,
          cell_timeout: int = CELL_TIMEOUT, total_timeout: int = TOTAL_TIMEOUT,
          progress: bool = True, jobs: int = 1) -> list[Submission]:
    """Grade every notebook under ``paths`` (``jobs`` kernels at a time) and optionally write the gradebook."""
    from concurrent.futures import ThreadPoolExecutor

    files = find_submissions(paths)
    roots = [Path(p) for p in paths]

    def one(item: tuple[int, Path]) -> Submission:
        i, path = item
        name = _display_name(path, roots)
        if progress:
            print(f"[{i}/{len(files)}] {name} ...", file=sys.stderr, flush=True)
        return grade_notebook(path, cell_timeout=cell_timeout, total_timeout=total_timeout, name=name)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(one, enumerate(files, 1)))
    if out is not None:
        write_gradebook(results, Path(out))
    return results


def _display_name(path: Path, roots: list[Path]) -> str:
    for root in roots:
        if root.is_dir():
            try:
                return str(path.relative_to(root.parent if root.name else root))
            except ValueError:
                continue
    return str(path)


def write_gradebook(results: list[Submission], out: Path) -> Path:
    """One row per submission (a column per check, total), and one feedback file per submission."""
    columns: list[str] = []
    for sub in results:
        for c in sub.checks:
            key = f"{sub.assignment}:{c.id}"
            if key not in columns:
                columns.append(key)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["submission", "assignment", "verdict", *columns, "score", "max_score"])
        for sub in results:
            by_key = {f"{sub.assignment}:{c.id}": c.points for c in sub.checks}
            writer.writerow([sub.submission, sub.assignment or "", sub.verdict,
                             *[by_key.get(k, "") for k in columns], sub.score, sub.max_score])
    folder = out.parent / (out.stem + "_feedback")
    folder.mkdir(exist_ok=True)
    for sub in results:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in sub.submission)
        lines = [f"# Feedback: {sub.submission}", "", f"Score: {sub.score} / {sub.max_score}  ({sub.verdict})", ""]
        for c in sub.checks:
            lines.append(f"- {'✅' if c.passed else '❌'} **{c.id}** ({c.points}/{c.max_points}): {c.feedback}")
        if sub.notes:
            lines += ["", "Notes from the run:", *[f"- {n}" for n in sub.notes]]
        (folder / f"{safe}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def summary_table(results: list[Submission]) -> str:
    lines = [f"{'submission':50s} {'score':>7s}  verdict"]
    for sub in results:
        lines.append(f"{sub.submission[-50:]:50s} {sub.score:3d}/{sub.max_score:<3d}  {sub.verdict}")
    if results:
        mean = sum(s.score / s.max_score for s in results if s.max_score) / max(1, sum(1 for s in results if s.max_score))
        lines.append(f"{len(results)} submission(s); mean {mean:.0%} of the points")
    return "\n".join(lines)


def _worker_main(argv: list[str]) -> int:
    path, assignment, marker, cell_timeout, result_file = argv
    run_notebook(path, assignment, marker, int(cell_timeout), result_file)
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "_run":
        sys.exit(_worker_main(sys.argv[2:]))
    print("usage: python -m tl_helpers grade PATH...", file=sys.stderr)
    sys.exit(2)
