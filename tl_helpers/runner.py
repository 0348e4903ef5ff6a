"""Run one notebook in a fresh kernel, in its own process, under limits.

:func:`run_isolated` copies the notebook into a temporary folder, then starts a worker
process (``python -m tl_helpers grade-worker JOB``) in a new session. The worker runs
the code cells with a per-cell timeout (interrupting a cell that runs too long), keeps
at most :data:`OUTPUT_CAP` characters of output per cell, appends one extra cell (the
grader's) and writes a JSON summary. The caller kills the whole process group, and
the kernel's own group, after a total timeout. Errors in cells are recorded, never
raised. :mod:`tl_helpers.grading` builds the gradebook on top of this.

Kernels get :data:`KERNEL_ENV` (unless the caller's environment sets those variables): the
course's compute threads spin only for a moment while they wait, then sleep, so kernels beside
each other, or beside another job, do not burn the CPUs they are waiting for. ``make install`` writes the same
variables into the course's kernel specs, and the root ``conftest.py`` into the test run's.

Isolation needs POSIX process groups (``os.setsid``, ``os.killpg``): :func:`isolation_missing`
says what this Python lacks, and :func:`run_isolated` refuses to start without them.

Nothing here imports torch or the rest of the course.
"""

from __future__ import annotations

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
from typing import Any, Callable

__all__ = [
    "CELL_TIMEOUT",
    "KERNEL_ENV",
    "NO_SPIN_ENV",
    "OUTPUT_CAP",
    "TOTAL_TIMEOUT",
    "THREAD_VARIABLES",
    "TRUNCATED",
    "RunOutcome",
    "capped_client",
    "isolation_missing",
    "kernel_env",
    "kill_process_group",
    "kill_kernel",
    "Prestarted",
    "WarmKernel",
    "prestart",
    "run_isolated",
    "run_notebook",
    "worker_main",
]

CELL_TIMEOUT = 120
TOTAL_TIMEOUT = 600
OUTPUT_CAP = 200_000  # characters of output kept per cell
TRUNCATED = "[output truncated by the grader]\n"

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""The variables that cap a kernel's compute threads (OpenMP, MKL, OpenBLAS)."""

KERNEL_ENV: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "1000"}
"""Environment of every kernel the course starts, read by torch's OpenMP runtime only when torch loads.

``OMP_WAIT_POLICY=PASSIVE``: compute threads sleep instead of spinning while they wait for work, so a
kernel whose CPUs are shared with another job does not spend them spinning (torch's default spins for
milliseconds: two trainings at once each ran up to 12x slower). ``GOMP_SPINCOUNT=1000``: with libgomp
(torch's runtime on Linux) a waiting thread first spins for 1,000 turns, a few microseconds, which
covers the short gaps between the many small operations of a training step on small images: a kernel
alone trained EfficientNet-Lite0 1.4-2x faster at 32-64 px than with no spinning at all, two at once
each about 2.5x slower than alone instead of 2x (``benchmarks/shared_cpu.py``). Other OpenMP runtimes
ignore it and only sleep. The Makefile's ``install`` passes the same pairs to ``ipykernel install``."""

NO_SPIN_ENV: dict[str, str] = {"GOMP_SPINCOUNT": "0"}
"""What replaces :data:`KERNEL_ENV`'s spin count where several jobs keep the CPUs busy at once (the
root ``conftest.py`` under pytest-xdist): waiting threads sleep at once."""


def kernel_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with :data:`KERNEL_ENV` added where ``base`` leaves it unset."""
    env = dict(os.environ if base is None else base)
    for name, value in KERNEL_ENV.items():
        env.setdefault(name, value)
    return env


def isolation_missing() -> list[str]:
    """What this Python lacks to run a notebook isolated and stoppable (empty on Linux, macOS and WSL)."""
    return [f"os.{name}" for name in ("setsid", "killpg", "getpgid") if not hasattr(os, name)]


@dataclass
class RunOutcome:
    """What :func:`run_isolated` saw.

    Attributes:
        events: What went wrong, one line each ("cell 3 raised NameError", "the kernel died in cell 4").
        results: The JSON the extra cell printed after the marker, or ``None`` if it never did.
        timed_out: The total timeout killed the run.
        cells_done: How many of the notebook's code cells finished (the grader's cell not counted).
        stderr: The worker's standard error (its last lines explain a crash).
        timings: ``warm`` (the kernel was pre-started), ``to_first_cell_s`` (from handing over the job to
            the first cell: starting the kernel, unless it was warm), ``cells_s`` (seconds per cell, the
            grader's last) and ``total_s`` (from handing over the job to the end).
    """

    events: list[str] = field(default_factory=list)
    results: Any = None
    timed_out: bool = False
    cells_done: int = 0
    stderr: str = ""
    timings: dict[str, Any] = field(default_factory=dict)


def capped_client(nb: Any, cwd: str, cell_timeout: int) -> Any:
    """An ``nbclient.NotebookClient`` that keeps at most :data:`OUTPUT_CAP` characters of output per cell.

    It overrides ``NotebookClient.output``, which nbclient does not document as public:
    ``pyproject.toml`` pins nbclient to the minor release this is tested with.
    """
    from nbclient import NotebookClient

    class CappedClient(NotebookClient):
        def output(self, outs, msg, display_id, cell_index):  # type: ignore[override]
            if any(o.get("text") == TRUNCATED for o in outs):
                return None
            used = sum(len(json.dumps(o.get("text", o.get("data", "")))) for o in outs)
            content = msg.get("content", {})
            incoming = len(json.dumps(content.get("text", content.get("data", ""))))
            if used + incoming > OUTPUT_CAP:
                if msg.get("msg_type") == "stream" and used < OUTPUT_CAP:
                    content["text"] = str(content.get("text", ""))[: OUTPUT_CAP - used]
                    super().output(outs, msg, display_id, cell_index)
                if not outs or outs[-1].get("text") != TRUNCATED:
                    from nbformat.v4 import new_output

                    outs.append(new_output("stream", name="stderr", text=TRUNCATED))
                return None
            return super().output(outs, msg, display_id, cell_index)

    return CappedClient(
        nb,
        timeout=cell_timeout,
        allow_errors=True,
        interrupt_on_timeout=True,
        kernel_name="python3",
        resources={"metadata": {"path": cwd}},
        record_timing=False,
        iopub_timeout=10,
        shutdown_kernel="immediate",
    )


def run_notebook(
    path: str, extra_cell: str, marker: str, cell_timeout: int, result_file: str, warm: WarmKernel | None = None
) -> None:
    """Worker (its own process): execute the code cells of ``path``, then ``extra_cell``; write a JSON summary.

    The summary (``events``, ``results``, the kernel's pid and process group, ``timings``) is
    rewritten after every cell, so it survives the worker being killed. ``results`` is the JSON
    the last cell printed on a line starting with ``marker``. ``warm``: a kernel this worker
    started before it was given ``path`` (:func:`worker_main`); used for this notebook only.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code"]
    for cell in nb.cells:
        cell.outputs = []
    nb.cells.append(nbformat.v4.new_code_cell(extra_cell))
    summary: dict[str, Any] = {"events": [], "results": None, "timings": {"warm": warm is not None, "cells_s": []}}

    def save() -> None:
        Path(result_file).write_text(json.dumps(summary))

    if warm is not None:
        warm.client.nb = nb
        warm.client.timeout = cell_timeout
        try:
            _run_cells(warm.client, nb, marker, summary, save, already_started=True)
        finally:
            warm.close()
        save()
        return
    for attempt in (1, 2):  # a kernel that dies while starting (a loaded machine) gets one more start
        client = capped_client(nb, os.path.dirname(path), cell_timeout)
        started = _run_cells(client, nb, marker, summary, save)
        if started or attempt == 2:
            break
    if not started:
        summary["events"].append(f"kernel error: {summary.pop('kernel_start_error', 'the kernel did not start')}")
    save()


def _run_cells(
    client: Any,
    nb: Any,
    marker: str,
    summary: dict[str, Any],
    save: Callable[[], None],
    already_started: bool = False,
) -> bool:
    """Start the kernel (unless ``already_started``: a :class:`WarmKernel`'s, which its owner closes) and
    execute ``nb``'s cells into ``summary``; whether the kernel started."""
    import contextlib

    started = False
    try:
        with contextlib.nullcontext() if already_started else client.setup_kernel():
            started = True
            summary["timings"]["first_cell_at"] = time.time()
            provisioner = getattr(client.km, "provisioner", None)
            summary["kernel_pid"] = getattr(provisioner, "pid", None)
            summary["kernel_pgid"] = getattr(provisioner, "pgid", None)
            save()
            for index, cell in enumerate(nb.cells):
                last = index == len(nb.cells) - 1
                cell_start = time.perf_counter()
                try:
                    client.execute_cell(cell, index)
                except Exception as exc:  # DeadKernelError, CellTimeoutError...
                    summary["events"].append(f"cell {index + 1}: {type(exc).__name__}: {str(exc)[:200]}")
                    save()
                    if "Dead" in type(exc).__name__ or not client.kc or not client.km.is_alive():
                        summary["timings"]["cells_s"].append(round(time.perf_counter() - cell_start, 3))
                        summary["events"].append(f"the kernel died in cell {index + 1}")
                        break
                for out in cell.get("outputs", []):
                    if out.get("output_type") == "error" and not last:
                        ename = out.get("ename")
                        summary["events"].append(
                            f"cell {index + 1} timed out and was interrupted"
                            if ename == "KeyboardInterrupt"
                            else f"cell {index + 1} raised {ename}"
                        )
                if not last:
                    summary["cells_done"] = index + 1  # the safety net re-runs only the cells that finished
                if last:
                    for out in cell.get("outputs", []):
                        for line in str(out.get("text", "")).splitlines():
                            if line.startswith(marker):
                                summary["results"] = json.loads(line[len(marker) :])
                summary["timings"]["cells_s"].append(round(time.perf_counter() - cell_start, 3))
                save()
    except Exception as exc:
        if started:
            summary["events"].append(f"kernel error: {type(exc).__name__}: {str(exc)[:200]}")
        else:
            summary["kernel_start_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return started


WARM_IMPORTS = "import torch"
"""What a pre-started kernel runs before it is given its notebook (not stored in its history): the
slowest import of every exercise notebook. Nothing of a submission exists yet when it runs."""
STOP_WAIT = 20
"""Seconds :meth:`Prestarted.close` lets an unused worker shut its kernel down before killing both."""
PRESTART_WAIT = 3600
"""Seconds a pre-started worker waits for its job before it gives up (its grader is gone)."""


class WarmKernel:
    """A kernel a worker started (and warmed with :data:`WARM_IMPORTS`) before it knew its notebook.

    It belongs to one worker, which runs exactly one notebook in it and then shuts it down: a
    pre-started kernel is never reused, so it holds nothing of any submission but its own.
    """

    def __init__(self, cwd: str) -> None:
        import nbformat

        self.client = capped_client(nbformat.v4.new_notebook(), cwd, CELL_TIMEOUT)
        self.context = self.client.setup_kernel()
        self.context.__enter__()
        self._open = True
        try:
            warm_cell = nbformat.v4.new_code_cell(WARM_IMPORTS)
            self.client.nb.cells.append(warm_cell)
            self.client.execute_cell(warm_cell, 0, store_history=False)
            self.client.nb.cells.clear()
            if any(o.get("output_type") == "error" for o in warm_cell.get("outputs", [])):
                raise RuntimeError("the warm-up imports failed in the pre-started kernel")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Shut the kernel down (once)."""
        if self._open:
            self._open = False
            self.context.__exit__(None, None, None)


def worker_main(job_file: str | os.PathLike) -> int:
    """The ``grade-worker`` subcommand: read (and delete) the job file, then :func:`run_notebook`.

    The job file is deleted before any submitted code runs, so a submission cannot read
    the marker its results must follow. A worker started before its job file exists
    (:func:`prestart`) first starts and warms its kernel (:class:`WarmKernel`), then waits for
    the file; if its parent exits, or no job comes within :data:`PRESTART_WAIT` seconds, it
    shuts the kernel down and exits.
    """
    job_path = Path(job_file)
    warm: WarmKernel | None = None
    if not job_path.exists():
        parent = os.getppid()
        try:
            warm = WarmKernel(os.getcwd())
            provisioner = getattr(warm.client.km, "provisioner", None)
            kernel = {
                "kernel_pid": getattr(provisioner, "pid", None),
                "kernel_pgid": getattr(provisioner, "pgid", None),
            }
            job_path.with_name(job_path.name + ".kernel").write_text(json.dumps(kernel))  # for the grader to kill it
        except Exception:
            warm = None  # run_notebook starts a kernel the usual way once the job is here
        deadline = time.monotonic() + PRESTART_WAIT
        while not job_path.exists():
            if os.getppid() != parent or time.monotonic() > deadline:
                if warm is not None:
                    warm.close()
                return 1
            time.sleep(0.02)
    job = json.loads(job_path.read_text())
    job_path.unlink()
    if job.get("stop"):  # the grader had no notebook left for this worker
        if warm is not None:
            warm.close()
        return 0
    run_notebook(
        job["notebook"], job["extra_cell"], job["marker"], int(job["cell_timeout"]), job["result_file"], warm=warm
    )
    return 0


class Prestarted:
    """A ``grade-worker`` process for one future notebook, in its own fresh folders and session.

    Started (``start=True``) before its notebook is known, it starts and warms its kernel
    (:class:`WarmKernel`) while the grader is still busy with the previous submission; the
    notebook then runs in that kernel and the worker, its kernel and its folders end with it.
    Nothing is ever reused: a submission still gets a process, a kernel and folders that no
    other submission's code has touched.
    """

    def __init__(self, *, threads: int | None = None, env: dict[str, str] | None = None, start: bool = True) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="tl-grade-")
        self._private = tempfile.TemporaryDirectory(prefix="tl-result-")
        self.work = Path(self._tmp.name) / "work"  # the submission's copy; its neighbours hold nothing of the grader's
        self.work.mkdir()
        self.result_file = Path(self._private.name) / f"{secrets.token_hex(8)}.json"
        self.job_file = Path(self._private.name) / f"{secrets.token_hex(8)}.job.json"
        env = dict(kernel_env(), PYTHONUNBUFFERED="1", MPLBACKEND="Agg", **(env or {}))
        if threads is not None:
            for name in THREAD_VARIABLES:
                env[name] = str(max(1, threads))
        self._env = env
        self.proc: subprocess.Popen | None = None
        self.used = False
        self.closed = False
        if start:
            self._start()

    def _start(self) -> None:
        cmd = [sys.executable, "-m", "tl_helpers", "grade-worker", str(self.job_file)]
        self.proc = subprocess.Popen(
            cmd, cwd=self.work, env=self._env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )

    def give_job(self, job: dict[str, Any]) -> subprocess.Popen:
        """Hand the worker its job (written whole, then renamed into place); the worker process.

        Raises:
            RuntimeError: this worker already had a job (a pre-started worker runs one notebook only).
        """
        if self.used:
            raise RuntimeError("a pre-started grading worker runs one notebook only")
        self.used = True
        partial = self.job_file.with_name(self.job_file.name + ".partial")
        partial.write_text(json.dumps(job))
        os.replace(partial, self.job_file)
        if self.proc is None:
            self._start()
        assert self.proc is not None
        return self.proc

    def close(self) -> None:
        """Stop the worker and its kernel (a job still unread is never run) and delete the folders (once)."""
        if self.closed:
            return
        self.closed = True
        if self.proc is not None:
            if self.proc.poll() is None and not self.used:  # ask the waiting worker to shut its kernel down
                self.used = True
                partial = self.job_file.with_name(self.job_file.name + ".partial")
                partial.write_text(json.dumps({"stop": True}))
                os.replace(partial, self.job_file)
                try:
                    self.proc.wait(timeout=STOP_WAIT)
                except subprocess.TimeoutExpired:
                    pass
            kill_process_group(self.proc)
            try:
                self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent
                pass
            kill_kernel(_read_json(self.job_file.with_name(self.job_file.name + ".kernel")))
        self._tmp.cleanup()
        self._private.cleanup()


def prestart(*, threads: int | None = None, env: dict[str, str] | None = None) -> Prestarted:
    """Start a worker, and its kernel, for the next notebook :func:`run_isolated` will run (see :class:`Prestarted`)."""
    if isolation_missing():
        raise RuntimeError("running a notebook isolated needs Linux, macOS or WSL")
    return Prestarted(threads=threads, env=env, start=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_isolated(
    path: str | os.PathLike,
    extra_cell: str,
    marker: str,
    *,
    cell_timeout: int = CELL_TIMEOUT,
    total_timeout: int = TOTAL_TIMEOUT,
    threads: int | None = None,
    env: dict[str, str] | None = None,
    prestarted: Prestarted | None = None,
) -> RunOutcome:
    """Run a copy of ``path`` in a fresh kernel (worker process, own session) under the limits.

    ``threads`` caps the kernel's compute threads (OpenMP/MKL/OpenBLAS): several kernels at once on a
    small CPU, each with a thread per core, slow each other down far more than their share.

    The copy lives alone in a temporary folder (a notebook that deletes files harms
    nothing); the job and result files live in another, private one. Never raises for
    a bad notebook.

    Args:
        path: The notebook.
        extra_cell: Source of a cell appended after the notebook's code cells.
        marker: ``extra_cell`` prints its JSON result on a line starting with this.
        cell_timeout: Seconds per cell (the cell is interrupted after that).
        total_timeout: Seconds for the whole run (then everything is killed).
        threads: Compute threads of the kernel (``None``: its own choice).
        env: Extra environment variables of the kernel.
        prestarted: A worker :func:`prestart` started earlier, whose kernel is already up (then its own
            ``threads`` and ``env`` apply, and these are ignored). It runs this notebook only and is
            closed afterwards. ``None``: start a worker now.

    Raises:
        RuntimeError: this Python cannot isolate the run (no POSIX process groups, e.g. native Windows).
    """
    missing = isolation_missing()
    if missing:
        raise RuntimeError(
            f"running a notebook isolated needs Linux, macOS or WSL: this Python has no {', '.join(missing)}"
        )
    path = Path(path)
    slot = prestarted if prestarted is not None else Prestarted(threads=threads, env=env, start=False)
    try:
        copy = slot.work / path.name
        shutil.copyfile(path, copy)
        proc = slot.give_job(
            {
                "notebook": str(copy),
                "extra_cell": extra_cell,
                "marker": marker,
                "cell_timeout": cell_timeout,
                "result_file": str(slot.result_file),
            }
        )
        handed_at = time.time()
        timed_out = False
        try:
            _, err = proc.communicate(timeout=total_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_process_group(proc)
            _, err = proc.communicate()
        ended_at = time.time()
        summary: dict[str, Any] = {"events": [], "results": None}
        if slot.result_file.is_file():
            try:
                summary = json.loads(slot.result_file.read_text())
            except ValueError:
                pass
        kill_process_group(proc)
        kill_kernel(summary)  # a kernel left running (its own session) after a total timeout
    finally:
        slot.close()
    timings = summary.get("timings") if isinstance(summary.get("timings"), dict) else {}
    first = timings.get("first_cell_at")
    cells = [float(x) for x in timings.get("cells_s", []) if isinstance(x, (int, float))]
    timings = {
        "warm": bool(timings.get("warm")),
        "to_first_cell_s": round(max(0.0, float(first) - handed_at), 3) if isinstance(first, (int, float)) else None,
        "cells_s": cells,
        "total_s": round(ended_at - handed_at, 3),
    }
    return RunOutcome(
        events=list(summary.get("events", [])),
        results=summary.get("results"),
        timed_out=timed_out,
        cells_done=int(summary.get("cells_done", 0) or 0),
        stderr=(err or b"").decode(errors="replace"),
        timings=timings,
    )


def kill_kernel(summary: dict[str, Any]) -> None:
    """Kill the kernel recorded in a worker's summary (its process group if it has its own)."""
    pgid, pid = summary.get("kernel_pgid"), summary.get("kernel_pid")
    try:
        if isinstance(pgid, int) and pgid > 1 and pgid != os.getpgid(0):
            os.killpg(pgid, signal.SIGKILL)
        elif isinstance(pid, int) and pid > 1:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def kill_process_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group ``proc`` leads (it was started with ``start_new_session=True``)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
