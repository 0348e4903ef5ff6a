"""Batch grading: ``python -m tl_helpers grade PATH... [--out gradebook.csv] [--json]``.

Each submission runs in its own fresh kernel, in a temporary folder holding a copy
of the notebook (so a submission that deletes files harms nothing), with a
per-cell and a total timeout and a cap on the output kept per cell
(:mod:`tl_helpers.runner`). Errors in cells are allowed (a learner's unfinished
exercise costs that exercise only). This module decides what to run and turns
what happened into points, verdicts, a gradebook and feedback files.

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

With ``private_data`` (``grade --private-data PATH``) the outcome checks score on the
instructor's data instead of the built-in private splits (:mod:`tl_helpers.private_data`):
its path is written into the grader's cell only, which sets ``TL_PRIVATE_DATA`` while the
checks run; without it that cell clears the variable, so a notebook cannot pick its own.

Grading needs POSIX signals and process groups (Linux, macOS, WSL): elsewhere
:func:`grade` and :func:`grade_notebook` raise :class:`GradingUnsupportedError` before
running anything, rather than give every learner zero.
"""

from __future__ import annotations

import csv
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_helpers.checks import ASSIGNMENTS, CHECKS
from tl_helpers.checks.table import BUDGETS, NET_FACTOR, NET_FLOOR
from tl_helpers.device import available_cpus
from tl_helpers.private_data import PRIVATE_DATA_ENV, load_private_data
from tl_helpers.runner import (
    CELL_TIMEOUT,
    OUTPUT_CAP,
    TOTAL_TIMEOUT,
    Prestarted,
    isolation_missing,
    prestart,
    run_isolated,
)

__all__ = [
    "CELL_TIMEOUT",
    "CHECK_TIMEOUT",
    "OUTPUT_CAP",
    "TOTAL_TIMEOUT",
    "CheckOutcome",
    "GradingUnsupportedError",
    "Submission",
    "assignment_of",
    "budget_of",
    "check_platform",
    "find_submissions",
    "grade",
    "grade_notebook",
    "grading_cell",
    "first_sentence",
    "MistakeCount",
    "mistake_name",
    "mistake_table",
    "summary_table",
    "write_gradebook",
    "write_summary",
]

CHECK_TIMEOUT = 60


class GradingUnsupportedError(RuntimeError):
    """This Python cannot stop or isolate a submission (no ``signal.SIGALRM``, no process groups)."""


def check_platform() -> None:
    """Refuse to grade where a submission cannot be isolated and stopped (e.g. native Windows).

    Raises:
        GradingUnsupportedError: naming what is missing; nothing has been graded.
    """
    import signal

    missing = [f"signal.{name}" for name in ("SIGALRM", "alarm") if not hasattr(signal, name)]
    missing += isolation_missing()
    if missing:
        raise GradingUnsupportedError(
            "grading needs Linux, macOS or WSL: this Python has no "
            + ", ".join(missing)
            + ", which the grader needs to stop a check that runs too long and to isolate each submission. "
            "Nothing was graded. Fix: run the grader under WSL, in a Linux container, or on Linux or macOS."
        )


@dataclass
class CheckOutcome:
    """One graded check of one submission.

    Attributes:
        mistake: For a failure, the short name of the mistake (``"bn_momentum_zero"``; the grader's own:
            ``"not_done"``, ``"crash"``, ``"not_defined"``, ``"not_reached"``, ``"timeout"``,
            ``"check_timeout"``, ``"check_crashed"``...), ``None`` when the check named none.
    """

    id: str
    passed: bool
    points: int
    max_points: int
    feedback: str
    mistake: str | None = None


@dataclass
class Submission:
    submission: str
    assignment: str | None
    checks: list[CheckOutcome] = field(default_factory=list)
    verdict: str = "ok"
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    hints: dict[str, int] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)

    @property
    def hints_total(self) -> int:
        """How many hint steps the learner asked for in this notebook (all exercises)."""
        return sum(self.hints.values())

    @property
    def score(self) -> int:
        return sum(c.points for c in self.checks)

    @property
    def max_score(self) -> int:
        return sum(c.max_points for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "submission": self.submission,
            "assignment": self.assignment,
            "score": self.score,
            "max_score": self.max_score,
            "verdict": self.verdict,
            "notes": self.notes,
            "seconds": round(self.seconds, 1),
            "timings": dict(self.timings),
            "hints_total": self.hints_total,
            "hints": dict(self.hints),
            "checks": [
                {
                    "id": c.id,
                    "passed": c.passed,
                    "points": c.points,
                    "max_points": c.max_points,
                    "feedback": c.feedback,
                    "mistake": c.mistake,
                }
                for c in self.checks
            ],
        }


# ----------------------------------------------------------------------------- finding submissions


def find_submissions(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The notebooks under ``paths`` (files as given, folders searched recursively, checkpoints skipped)."""
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


def grading_cell(
    assignment: str, marker: str, check_timeout: int = CHECK_TIMEOUT, private_data: str | None = None
) -> str:
    """Source of the cell appended to a submission: runs the assignment's checks, prints JSON after ``marker``.

    ``private_data`` (an absolute path) is set as ``TL_PRIVATE_DATA`` while the checks run; when it is
    ``None`` the variable is cleared, so the submission cannot choose the data it is graded on.
    """
    spec = [(col, cid, list(names)) for col, cid, names in ASSIGNMENTS[assignment]]
    package_parent = str(Path(__file__).resolve().parents[1])
    trusted_path = [package_parent] + [p for p in sys.path if p and Path(p).resolve() != Path.cwd().resolve()]
    set_private = f"\n    _environ[{PRIVATE_DATA_ENV!r}] = {private_data!r}" if private_data else ""
    return f"""
def _tl_grade():
    import sys as _sys
    _sys.path[:] = {trusted_path!r}  # never import a tl_helpers the submission wrote into its folder
    _hints = {{}}
    try:  # the hint counts of the tl_helpers the notebook used (informational: they earn no points)
        _used = _sys.modules["tl_helpers.checks.hints"].hints_used()
        _hints = {{str(k)[:100]: int(v) for k, v in list(dict(_used).items())[:200] if int(v) > 0}}
    except BaseException:
        _hints = {{}}
    for _name in [n for n in list(_sys.modules) if n == "tl_helpers" or n.startswith("tl_helpers.")
                  or n in ("json", "json.encoder", "json.decoder", "json.scanner", "signal")]:
        del _sys.modules[_name]
    import importlib as _importlib
    _json = _importlib.import_module("json")
    _signal = _importlib.import_module("signal")
    _checks = _importlib.import_module("tl_helpers.checks")
    _environ = _importlib.import_module("os").environ
    _environ.pop({PRIVATE_DATA_ENV!r}, None){set_private}
    _ns = globals()
    _out = []

    class _CheckTimeout(BaseException):  # not an Exception: run_check must not take it for the learner's error
        pass

    def _alarm(*_):
        raise _CheckTimeout("the check ran longer than {check_timeout} s")

    for _col, _cid, _names in {spec!r}:
        _missing = [n for n in _names if n not in _ns]
        if _missing:
            _out.append([_col, False, "not defined: " + ", ".join(_missing), "not_defined"])
            continue
        try:
            _signal.signal(_signal.SIGALRM, _alarm)
            _signal.alarm({check_timeout})
            try:
                _r = _checks.run_check(_cid, *[_ns[n] for n in _names])
            finally:
                _signal.alarm(0)
            _passed = bool(_r.passed is True)
            _mistake = None if _passed else getattr(_r, "mistake", None)
            _out.append([_col, _passed, str(_r.feedback)[:2000], _mistake if isinstance(_mistake, str) else None])
        except BaseException as _exc:
            _out.append([_col, False, "check stopped: " + type(_exc).__name__ + ": " + str(_exc)[:500],
                         "check_timeout" if isinstance(_exc, _CheckTimeout) else "check_crashed"])
    _environ.pop({PRIVATE_DATA_ENV!r}, None)
    _sys.stdout.write("\\n{marker}" + _json.dumps({{"checks": _out, "hints": _hints}}) + "\\n")
    _sys.stdout.flush()

_tl_grade()
del _tl_grade
"""


# ----------------------------------------------------------------------------- grading one notebook


def grade_notebook(
    path: Path,
    *,
    cell_timeout: int = CELL_TIMEOUT,
    total_timeout: int = TOTAL_TIMEOUT,
    name: str | None = None,
    threads: int | None = None,
    private_data: str | os.PathLike | None = None,
    prestarted: Prestarted | None = None,
) -> Submission:
    """Grade one submission in a fresh kernel process (``threads``: its compute threads).

    ``private_data``: the instructor's data for the outcome checks (see :func:`grade`).
    ``prestarted``: a worker started for this submission (:func:`tl_helpers.runner.prestart`, with the
    same ``threads`` and ``env={TL_PRIVATE_DATA: ""}``), whose kernel is already up; used once, then closed.

    Raises:
        GradingUnsupportedError: on a platform that cannot isolate the submission (:func:`check_platform`).
        Nothing else: a bad submission gets a verdict.
    """
    import nbformat

    check_platform()
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
    budget = budget_of(assignment)
    if budget is not None:
        total_timeout = budget
    cell = grading_cell(
        assignment, marker, private_data=str(Path(private_data).resolve()) if private_data is not None else None
    )
    run = run_isolated(
        path,
        cell,
        marker,
        cell_timeout=cell_timeout,
        total_timeout=total_timeout,
        threads=threads,
        env={PRIVATE_DATA_ENV: ""},  # never visible to the notebook's own cells
        prestarted=prestarted,
    )
    sub.timings = dict(run.timings)
    stopped_in = None
    if run.timed_out and budget is not None:
        # The safety net tripped: grade what the notebook completed before it, by re-running only the code
        # cells that finished (they ran within the net once) followed by the grader's cell.
        stopped_in = run.cells_done + 1
        rerun = _rerun_completed(path, nb, run.cells_done, cell, marker, cell_timeout, budget, threads)
        if rerun is not None and rerun.results is not None:
            run = rerun
            run.timed_out = True
    sub.notes += run.events[:20]
    payload = run.results
    if isinstance(payload, dict):
        sub.hints = _clean_hints(payload.get("hints"))
        payload = payload.get("checks")
    if run.timed_out and budget is not None:
        sub.verdict = f"stopped by the time safety net ({budget}s)"
        sub.notes.append(
            f"the notebook ran past the grader's safety net of {budget}s (about {NET_FACTOR}x the solution's time "
            f"on this machine) and was stopped in code cell {stopped_in}; the checks of the cells before it were graded"
        )
    elif run.timed_out:
        sub.verdict = f"timed out after {total_timeout}s"
    elif any("died" in e for e in sub.notes):
        sub.verdict = "kernel died"
    elif payload is None:
        sub.verdict = "grading cell did not report"
        sub.notes += run.stderr.strip().splitlines()[-3:]
    elif any("CellTimeoutError" in e or "timed out" in e for e in sub.notes):
        sub.verdict = "a cell timed out"
    elif any("raised" in e for e in sub.notes):
        sub.verdict = "errors in cells"
    results = {}
    for item in payload if isinstance(payload, list) else []:
        if isinstance(item, list) and len(item) in (3, 4) and isinstance(item[0], str):
            passed = item[1] is True
            mistake = None if passed or len(item) < 4 else mistake_name(item[3])
            results.setdefault(item[0], (passed, str(item[2]), mistake))
    why = "; ".join(sub.notes[-3:]) or sub.verdict
    for col, cid, _ in ASSIGNMENTS[assignment]:
        max_points = CHECKS[cid].points
        if col in results:
            passed, feedback, mistake = results[col]
            if feedback.startswith("not defined") and sub.notes:
                feedback += f" (the notebook stopped or failed earlier: {why})"
        else:
            passed, feedback = False, f"not reached: {why}"
            mistake = "timeout" if run.timed_out else "not_reached"
        sub.checks.append(CheckOutcome(col, passed, max_points if passed else 0, max_points, feedback, mistake))
    sub.seconds = time.perf_counter() - t0
    return sub


REFERENCE_WORKLOAD_SECONDS = 0.36
"""Seconds :func:`reference_workload` takes on the reference machine (2 CPU cores, unloaded): 0.362 s best of
six on a 2-core Intel Xeon, idle (2026-12-06), the machine ``BUDGETS`` was measured on."""


def reference_workload() -> float:
    """Seconds for a small, fixed piece of the course's work on this machine: 20 training steps of a
    BatchNorm convolutional network on 32 images of 64 px (no downloads, no files; about half a second)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 3, stride=2, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1),
        nn.BatchNorm2d(128),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, 10),
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, y = torch.randn(32, 3, 64, 64), torch.arange(32) % 10
    nn.functional.cross_entropy(net(x), y).backward()  # warm-up, not timed
    t0 = time.perf_counter()
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return time.perf_counter() - t0


_SLOWDOWN: list[float] = []


def machine_slowdown() -> float:
    """How much slower than the reference machine this one runs :func:`reference_workload` (at least 1),
    measured once per grader process (the best of three runs)."""
    if not _SLOWDOWN:
        best = min(reference_workload() for _ in range(3))
        _SLOWDOWN.append(max(1.0, best / REFERENCE_WORKLOAD_SECONDS))
    return _SLOWDOWN[0]


def budget_of(assignment: str) -> int | None:
    """The wall-clock safety net in seconds for ``assignment``, or ``None`` when it has none.

    The budget a learner must respect is stated in work (image passes) and enforced by the checks; this net
    only stops runaway notebooks: ``max(NET_FLOOR, NET_FACTOR x BUDGETS[assignment] x machine_slowdown())``,
    where ``BUDGETS`` holds the solution's seconds on the reference machine.
    """
    reference = BUDGETS.get(assignment)
    if not reference:
        return None
    return int(max(NET_FLOOR, NET_FACTOR * float(reference) * machine_slowdown()))


def _rerun_completed(
    path: Path,
    nb: Any,
    cells_done: int,
    cell: str,
    marker: str,
    cell_timeout: int,
    budget: int,
    threads: int | None,
) -> Any:
    """Run the first ``cells_done`` code cells of ``nb`` and the grader's ``cell``; ``None`` if nothing to run."""
    import tempfile

    import nbformat

    code = [c for c in nb.cells if c.cell_type == "code"][:cells_done]
    if not code:
        return None
    copy = nbformat.v4.new_notebook(cells=code, metadata=nb.metadata)
    with tempfile.TemporaryDirectory(prefix="tl-net-") as tmp:
        target = Path(tmp) / path.name
        nbformat.write(copy, str(target))
        return run_isolated(
            target,
            cell,
            marker,
            cell_timeout=cell_timeout,
            total_timeout=budget,
            threads=threads,
            env={PRIVATE_DATA_ENV: ""},
        )


def _clean_hints(raw: Any) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    hints: dict[str, int] = {}
    for key, value in raw.items():
        if isinstance(key, str) and isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10_000:
            hints[key[:100]] = value
    return dict(sorted(hints.items()))


def _fill_missing(sub: Submission, why: str) -> None:
    if sub.assignment:
        for col, cid, _ in ASSIGNMENTS[sub.assignment]:
            sub.checks.append(CheckOutcome(col, False, 0, CHECKS[cid].points, why, "unreadable"))


def mistake_name(raw: Any) -> str | None:
    """``raw`` if it is a short snake_case mistake name (a check's ``fail(..., mistake=...)``), else ``None``."""
    import re

    if isinstance(raw, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,59}", raw):
        return raw
    return None


# ----------------------------------------------------------------------------- many notebooks


def grade(
    paths: Sequence[str | os.PathLike],
    *,
    out: str | os.PathLike | None = None,
    cell_timeout: int = CELL_TIMEOUT,
    total_timeout: int = TOTAL_TIMEOUT,
    progress: bool = True,
    jobs: int = 1,
    private_data: str | os.PathLike | None = None,
    prestart_kernels: bool = True,
) -> list[Submission]:
    """Grade every notebook under ``paths`` (``jobs`` kernels at a time) and optionally write the gradebook.

    Args:
        prestart_kernels: While a job grades one submission, start the worker and kernel (with
            ``import torch`` done) for its next one, so kernel start and that import overlap the
            previous run. Each pre-started kernel runs exactly one submission (isolation as without).
        private_data: The instructor's data (a folder or a file, :mod:`tl_helpers.private_data`) that the
            outcome checks score on instead of the built-in private splits. Validated before grading starts.

    Raises:
        GradingUnsupportedError: on a platform that cannot isolate submissions; nothing is graded.
        PrivateDataError: ``private_data`` cannot be used (the message names the file).
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    check_platform()
    if private_data is not None:
        load_private_data(private_data)  # fail now, with the file's name, not inside every kernel
    files = find_submissions(paths)
    roots = [Path(p) for p in paths]
    # with several kernels at once, share out the CPUs this process may use (unless the caller set the count)
    threads = None
    if jobs > 1 and "OMP_NUM_THREADS" not in os.environ:
        threads = max(1, available_cpus() // jobs)

    local = threading.local()  # each job's worker for its next submission (pre-started, used once)
    started: list[Prestarted] = []

    def one(item: tuple[int, Path]) -> Submission:
        i, path = item
        name = _display_name(path, roots)
        if progress:
            print(f"[{i}/{len(files)}] {name} ...", file=sys.stderr, flush=True)
        mine: Prestarted | None = getattr(local, "next", None)
        local.next = None
        if prestart_kernels and len(files) - i >= max(1, jobs):  # this job will most likely get another one
            local.next = prestart(threads=threads, env={PRIVATE_DATA_ENV: ""})
            started.append(local.next)
        try:
            return grade_notebook(
                path,
                cell_timeout=cell_timeout,
                total_timeout=total_timeout,
                name=name,
                threads=threads,
                private_data=private_data,
                prestarted=mine,
            )
        finally:
            if mine is not None:
                mine.close()

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(one, enumerate(files, 1)))
    finally:
        for slot in started:  # the ones no submission was left for
            slot.close()
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
    hint_columns = sorted({h for sub in results for h in sub.hints})
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "submission",
                "assignment",
                "verdict",
                *columns,
                "score",
                "max_score",
                "hints",
                *[f"hints:{h}" for h in hint_columns],
            ]
        )
        for sub in results:
            by_key = {f"{sub.assignment}:{c.id}": c.points for c in sub.checks}
            writer.writerow(
                [
                    sub.submission,
                    sub.assignment or "",
                    sub.verdict,
                    *[by_key.get(k, "") for k in columns],
                    sub.score,
                    sub.max_score,
                    sub.hints_total,
                    *[sub.hints.get(h, 0) for h in hint_columns],
                ]
            )
    folder = out.parent / (out.stem + "_feedback")
    folder.mkdir(exist_ok=True)
    for sub in results:
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in sub.submission)
        lines = [f"# Feedback: {sub.submission}", "", f"Score: {sub.score} / {sub.max_score}  ({sub.verdict})", ""]
        for c in sub.checks:
            named = f" [mistake: `{c.mistake}`]" if c.mistake and not c.passed else ""
            lines.append(f"- {'✅' if c.passed else '❌'} **{c.id}** ({c.points}/{c.max_points}){named}: {c.feedback}")
        if sub.hints:
            asked = ", ".join(f"{h} ({n})" for h, n in sub.hints.items())
            lines += ["", f"Hints asked for: {sub.hints_total} ({asked}). Hints cost no points."]
        if sub.notes:
            lines += ["", "Notes from the run:", *[f"- {n}" for n in sub.notes]]
        (folder / f"{safe}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def summary_table(results: list[Submission]) -> str:
    """A plain-text table: one line per submission (score, verdict), then the class mean."""
    lines = [f"{'submission':50s} {'score':>7s}  verdict"]
    for sub in results:
        lines.append(f"{sub.submission[-50:]:50s} {sub.score:3d}/{sub.max_score:<3d}  {sub.verdict}")
    if results:
        mean = sum(s.score / s.max_score for s in results if s.max_score) / max(
            1, sum(1 for s in results if s.max_score)
        )
        lines.append(f"{len(results)} submission(s); mean {mean:.0%} of the points")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the class summary


def first_sentence(feedback: str, limit: int = 160) -> str:
    """The first sentence of a check's feedback (what the class summary groups failures by)."""
    import re

    text = " ".join(str(feedback).split())
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z\"'(`])", text, maxsplit=1)[0]  # "e.g. blocks.3" does not end it
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


@dataclass
class MistakeCount:
    """One kind of failure of one check across the class (a row of the class summary).

    Attributes:
        mistake: The mistake's name, or ``None`` for failures the check did not name (grouped by ``example``).
        count: How many submissions failed the check this way.
        share: ``count`` over the submissions graded on that check.
        example: The first sentence of one learner's feedback for it.
    """

    mistake: str | None
    count: int
    share: float
    example: str


def mistake_table(results: list[Submission], top: int = 3) -> dict[str, list[MistakeCount]]:
    """Per graded check (``assignment:check``), its ``top`` most frequent failures, most frequent first.

    Failures are counted by mistake name; a failure without a name counts under its feedback's first
    sentence. On equal counts a named mistake comes first.
    """
    from collections import Counter

    total: Counter[str] = Counter()
    groups: dict[str, Counter[tuple[str | None, str]]] = {}
    examples: dict[tuple[str, str | None, str], str] = {}
    for sub in results:
        for c in sub.checks:
            key = f"{sub.assignment}:{c.id}"
            total[key] += 1
            if c.passed:
                continue
            sentence = first_sentence(c.feedback)
            group = (c.mistake, "") if c.mistake else (None, sentence)
            groups.setdefault(key, Counter())[group] += 1
            examples.setdefault((key, *group), sentence)
    table: dict[str, list[MistakeCount]] = {}
    for key in total:
        ranked = sorted(groups.get(key, Counter()).items(), key=lambda kv: (-kv[1], kv[0][0] is None, kv[0][1]))
        table[key] = [
            MistakeCount(name, n, n / total[key], examples[(key, name, text)]) for (name, text), n in ranked[:top]
        ]
    return table


def write_summary(results: list[Submission], out: str | os.PathLike, top: int = 3) -> Path:
    """Write a one-page HTML class summary (no external assets: the chart is an embedded PNG).

    It shows, per graded check (``assignment:check``), the pass rate and the ``top`` most frequent
    mistakes (:func:`mistake_table`: by mistake name, with how many learners made it, their share of
    the class and one learner's message; a failure without a name by its message's first sentence),
    and per exercise the hints asked for (learners who asked, steps in total).

    Returns:
        The path written.
    """
    import base64
    import html
    import io
    from collections import Counter

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    passed: dict[str, int] = {}
    total: dict[str, int] = {}
    for sub in results:
        for c in sub.checks:
            key = f"{sub.assignment}:{c.id}"
            total[key] = total.get(key, 0) + 1
            passed[key] = passed.get(key, 0) + int(c.passed)
    mistakes = mistake_table(results, top)
    hint_steps: Counter[str] = Counter()
    hint_learners: Counter[str] = Counter()
    for sub in results:
        for exercise, n in sub.hints.items():
            hint_steps[exercise] += n
            hint_learners[exercise] += 1

    keys = list(total)
    image = ""
    if keys:
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(keys) + 1.2))
        rates = [100 * passed[k] / total[k] for k in keys]
        ax.barh(range(len(keys)), rates, color=["#2a9d8f" if r >= 50 else "#e76f51" for r in rates])
        ax.set_yticks(range(len(keys)), keys, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel("learners passing (%)")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        plt.close(fig)
        image = base64.b64encode(buffer.getvalue()).decode("ascii")

    esc = html.escape
    rows = []
    for k in keys:
        messages = "".join(_mistake_item(m) for m in mistakes.get(k, [])) or "<li>none</li>"
        rows.append(
            f"<tr><td>{esc(k)}</td><td>{passed[k]}/{total[k]} ({100 * passed[k] / total[k]:.0f}%)</td>"
            f"<td><ul>{messages}</ul></td></tr>"
        )
    hint_rows = [
        f"<tr><td>{esc(e)}</td><td>{hint_learners[e]}</td><td>{hint_steps[e]}</td></tr>" for e in sorted(hint_steps)
    ] or ["<tr><td colspan='3'>no hints were asked for</td></tr>"]
    verdicts = Counter(sub.verdict for sub in results)
    graded = [s for s in results if s.max_score]
    mean = sum(s.score / s.max_score for s in graded) / len(graded) if graded else 0.0
    verdict_text = ", ".join(f"{v} ({n})" for v, n in verdicts.most_common())
    chart = f'<img alt="pass rate per check" src="data:image/png;base64,{image}">' if image else ""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Class summary</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse;width:100%}}
td,th{{border:1px solid #ccc;padding:.3em .5em;vertical-align:top;text-align:left}}
ul{{margin:0;padding-left:1.2em}}</style>
</head><body>
<h1>Class summary</h1>
<p>{len(results)} submission(s); mean {mean:.0%} of the points. Verdicts: {esc(verdict_text)}.</p>
<h2>Pass rate per check</h2>
{chart}
<table><tr><th>check</th><th>passed</th><th>most frequent mistakes (learners, share of the class)</th></tr>
{"".join(rows)}
</table>
<h2>Hints used per exercise</h2>
<table><tr><th>exercise</th><th>learners who asked</th><th>hint steps in total</th></tr>
{"".join(hint_rows)}
</table>
</body></html>
"""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _mistake_item(m: MistakeCount) -> str:
    import html

    head = f"{m.count}× ({m.share:.0%})"
    if m.mistake is None:
        return f"<li>{head} {html.escape(m.example)}</li>"
    return f"<li>{head} <code>{html.escape(m.mistake)}</code> — e.g. “{html.escape(m.example)}”</li>"
