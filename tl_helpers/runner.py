"""Run one notebook in a fresh kernel, in its own process, under limits.

:func:`run_isolated` copies the notebook into a temporary folder, then starts a worker
process (``python -m tl_helpers grade-worker JOB``) in a new session. The worker runs
the code cells with a per-cell timeout (interrupting a cell that runs too long), keeps
at most :data:`OUTPUT_CAP` characters of output per cell, appends one extra cell (the
grader's) and writes a JSON summary. The caller kills the whole process group, and
the kernel's own group, after a total timeout. Errors in cells are recorded, never
raised. :mod:`tl_helpers.grading` builds the gradebook on top of this.

Kernels get :data:`KERNEL_ENV` (unless the caller's environment sets those variables): the
course's compute threads wait without spinning, so kernels beside each other, or beside
another job, do not burn the CPUs they are waiting for. ``make install`` writes the same
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "CELL_TIMEOUT",
    "KERNEL_ENV",
    "OUTPUT_CAP",
    "TOTAL_TIMEOUT",
    "TRUNCATED",
    "RunOutcome",
    "capped_client",
    "isolation_missing",
    "kernel_env",
    "kill_process_group",
    "kill_kernel",
    "run_isolated",
    "run_notebook",
    "worker_main",
]

CELL_TIMEOUT = 120
TOTAL_TIMEOUT = 600
OUTPUT_CAP = 200_000  # characters of output kept per cell
TRUNCATED = "[output truncated by the grader]\n"

KERNEL_ENV: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Environment of every kernel the course starts. ``OMP_WAIT_POLICY=PASSIVE``: torch's OpenMP threads
(libgomp, which reads it only when torch loads) sleep instead of spinning while they wait for work, so
a kernel whose CPUs are shared with another job does not spend them spinning (measured by
``benchmarks/shared_cpu.py``). The Makefile's ``install`` passes the same pairs to ``ipykernel install``."""


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
        stderr: The worker's standard error (its last lines explain a crash).
    """

    events: list[str] = field(default_factory=list)
    results: Any = None
    timed_out: bool = False
    stderr: str = ""


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


def run_notebook(path: str, extra_cell: str, marker: str, cell_timeout: int, result_file: str) -> None:
    """Worker (its own process): execute the code cells of ``path``, then ``extra_cell``; write a JSON summary.

    The summary (``events``, ``results``, the kernel's pid and process group) is rewritten
    after every cell, so it survives the worker being killed. ``results`` is the JSON the
    last cell printed on a line starting with ``marker``.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code"]
    for cell in nb.cells:
        cell.outputs = []
    nb.cells.append(nbformat.v4.new_code_cell(extra_cell))
    summary: dict[str, Any] = {"events": [], "results": None}

    def save() -> None:
        Path(result_file).write_text(json.dumps(summary))

    for attempt in (1, 2):  # a kernel that dies while starting (a loaded machine) gets one more start
        client = capped_client(nb, os.path.dirname(path), cell_timeout)
        started = _run_cells(client, nb, marker, summary, save)
        if started or attempt == 2:
            break
    if not started:
        summary["events"].append(f"kernel error: {summary.pop('kernel_start_error', 'the kernel did not start')}")
    save()


def _run_cells(client: Any, nb: Any, marker: str, summary: dict[str, Any], save: Callable[[], None]) -> bool:
    """Start the kernel and execute ``nb``'s cells into ``summary``; whether the kernel started."""
    started = False
    try:
        with client.setup_kernel():
            started = True
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
                        summary["events"].append(
                            f"cell {index + 1} timed out and was interrupted"
                            if ename == "KeyboardInterrupt"
                            else f"cell {index + 1} raised {ename}"
                        )
                if last:
                    for out in cell.get("outputs", []):
                        for line in str(out.get("text", "")).splitlines():
                            if line.startswith(marker):
                                summary["results"] = json.loads(line[len(marker) :])
                save()
    except Exception as exc:
        if started:
            summary["events"].append(f"kernel error: {type(exc).__name__}: {str(exc)[:200]}")
        else:
            summary["kernel_start_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    return started


def worker_main(job_file: str | os.PathLike) -> int:
    """The ``grade-worker`` subcommand: read (and delete) the job file, then :func:`run_notebook`.

    The job file is deleted before any submitted code runs, so a submission cannot read
    the marker its results must follow.
    """
    job_path = Path(job_file)
    job = json.loads(job_path.read_text())
    job_path.unlink()
    run_notebook(job["notebook"], job["extra_cell"], job["marker"], int(job["cell_timeout"]), job["result_file"])
    return 0


def run_isolated(
    path: str | os.PathLike,
    extra_cell: str,
    marker: str,
    *,
    cell_timeout: int = CELL_TIMEOUT,
    total_timeout: int = TOTAL_TIMEOUT,
    threads: int | None = None,
    env: dict[str, str] | None = None,
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

    Raises:
        RuntimeError: this Python cannot isolate the run (no POSIX process groups, e.g. native Windows).
    """
    missing = isolation_missing()
    if missing:
        raise RuntimeError(
            f"running a notebook isolated needs Linux, macOS or WSL: this Python has no {', '.join(missing)}"
        )
    path = Path(path)
    with (
        tempfile.TemporaryDirectory(prefix="tl-grade-") as tmp,
        tempfile.TemporaryDirectory(prefix="tl-result-") as private,
    ):
        work = Path(tmp) / "work"  # the submission's copy; its neighbours hold nothing of the grader's
        work.mkdir()
        copy = work / path.name
        shutil.copyfile(path, copy)
        result_file = Path(private) / f"{secrets.token_hex(8)}.json"
        job_file = Path(private) / f"{secrets.token_hex(8)}.job.json"
        job_file.write_text(
            json.dumps(
                {
                    "notebook": str(copy),
                    "extra_cell": extra_cell,
                    "marker": marker,
                    "cell_timeout": cell_timeout,
                    "result_file": str(result_file),
                }
            )
        )
        cmd = [sys.executable, "-m", "tl_helpers", "grade-worker", str(job_file)]
        env = dict(kernel_env(), PYTHONUNBUFFERED="1", MPLBACKEND="Agg", **(env or {}))
        if threads is not None:
            for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                env[name] = str(max(1, threads))
        proc = subprocess.Popen(
            cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        timed_out = False
        try:
            _, err = proc.communicate(timeout=total_timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_process_group(proc)
            _, err = proc.communicate()
        summary: dict[str, Any] = {"events": [], "results": None}
        if result_file.is_file():
            try:
                summary = json.loads(result_file.read_text())
            except ValueError:
                pass
        kill_process_group(proc)
        kill_kernel(summary)  # a kernel left running (its own session) after a total timeout
    return RunOutcome(
        events=list(summary.get("events", [])),
        results=summary.get("results"),
        timed_out=timed_out,
        stderr=(err or b"").decode(errors="replace"),
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
