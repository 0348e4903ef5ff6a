"""Grading at class scale: seconds per submission, the share spent starting up, ``--jobs`` scaling.

    python benchmarks/grading.py                                   # smoke: 2 submissions of 01, 03, 04, 08
    python benchmarks/grading.py --submissions 30 --notebooks all  # the class-scale figure (long: 06, 07 train)
    python benchmarks/grading.py --notebooks 03 08 --submissions 4 --jobs 1 2
    make bench-grading BENCH_ARGS="--submissions 30 --notebooks all"

The submissions are the solution notebooks (``solutions/``, full marks), each copied
``--submissions`` times into a temporary class folder, graded with ``tl_helpers.grading.grade``
exactly as ``python -m tl_helpers grade`` does, once per ``--jobs`` value, with the next kernel
pre-started (the default) and, with ``--compare-prestart``, without. Per notebook it reports:

- ``per_submission_s``: the class's wall time divided by the submissions (what ``--jobs`` buys);
- ``run_s``: one submission's own time from handing it to its worker to the end (mean);
- ``startup_s`` and ``startup_share``: starting the kernel (what the worker waited for before the
  first cell; near zero when it was pre-started) plus the notebook's first code cell, its
  imports and data loading, as a share of ``run_s``;
- ``grading_cell_s``: the grader's own cell (re-importing ``tl_helpers.checks``, running the checks).

Run it alone on an idle machine: it measures wall time. 06 and 07 train models and take minutes
per submission on a 2-core CPU. Figures go to ``benchmarks/grading.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tl_helpers import grading  # noqa: E402
from tl_helpers.device import available_cpus  # noqa: E402

ALL = sorted(p.stem for p in (REPO / "solutions").glob("*_exercises.ipynb"))
CHEAP = [n for n in ALL if n[:2] in {"01", "03", "04", "08"}]


def pick(names: list[str]) -> list[str]:
    """Notebook stems from prefixes ("03"), full stems, or "all"."""
    if names == ["all"]:
        return ALL
    chosen = []
    for name in names:
        found = [n for n in ALL if n.startswith(name)]
        if not found:
            raise SystemExit(f"no solution notebook starts with {name!r}; choose from {', '.join(ALL)}")
        chosen += [n for n in found if n not in chosen]
    return chosen


def make_class(folder: Path, notebook: str, copies: int) -> Path:
    """``copies`` learners' copies of one solution notebook, named like real submissions."""
    target = folder / notebook
    target.mkdir(parents=True)
    for i in range(copies):
        shutil.copyfile(REPO / "solutions" / f"{notebook}.ipynb", target / f"learner{i:02d}_{notebook}.ipynb")
    return target


def measure(folder: Path, jobs: int, prestart: bool) -> dict[str, object]:
    """Grade every submission in ``folder``; the figures of that run."""
    t0 = time.perf_counter()
    results = grading.grade([folder], progress=False, jobs=jobs, prestart_kernels=prestart)
    wall = time.perf_counter() - t0
    timings = [r.timings for r in results if r.timings]
    runs = [float(t["total_s"]) for t in timings]
    kernel = [float(t["to_first_cell_s"] or 0.0) for t in timings]
    setup = [float(t["cells_s"][0]) for t in timings if t.get("cells_s")]
    grader = [float(t["cells_s"][-1]) for t in timings if t.get("cells_s")]
    startup = [k + s for k, s in zip(kernel, setup)]
    mean = statistics.fmean
    return {
        "jobs": jobs,
        "prestart": prestart,
        "submissions": len(results),
        "full_marks": sum(r.score == r.max_score for r in results),
        "verdicts": sorted({r.verdict for r in results}),
        "wall_s": round(wall, 2),
        "per_submission_s": round(wall / max(1, len(results)), 2),
        "run_s": round(mean(runs), 2) if runs else None,
        "kernel_start_s": round(mean(kernel), 2) if kernel else None,
        "setup_cell_s": round(mean(setup), 2) if setup else None,
        "startup_s": round(mean(startup), 2) if startup else None,
        "startup_share": round(mean(startup) / mean(runs), 3) if runs and startup else None,
        "grading_cell_s": round(mean(grader), 2) if grader else None,
        "warm_kernels": sum(bool(t.get("warm")) for t in timings),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--notebooks", nargs="+", default=[n[:2] for n in CHEAP], help='prefixes ("03 08") or "all"')
    p.add_argument("--submissions", type=int, default=2, help="copies of each notebook (30 for the class figure)")
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="--jobs values to compare (default 1 2)")
    p.add_argument("--compare-prestart", action="store_true", help="also grade without pre-started kernels")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "grading.json"))
    args = p.parse_args(argv)
    grading.check_platform()
    notebooks = pick(args.notebooks)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="tl-bench-grading-") as tmp:
        for notebook in notebooks:
            folder = make_class(Path(tmp), notebook, args.submissions)
            for jobs in args.jobs:
                for prestart in (True, False) if args.compare_prestart else (True,):
                    row = {"notebook": notebook, **measure(folder, jobs, prestart)}
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    header = (
        f"{'notebook':36s} {'jobs':>4s} {'warm':>4s} {'s/sub':>7s} {'run s':>7s} {'kernel':>7s} "
        f"{'setup':>7s} {'start%':>6s} {'grader':>7s}  marks"
    )
    print(header)
    for r in rows:
        share = f"{100 * r['startup_share']:.0f}%" if r["startup_share"] is not None else "-"
        print(
            f"{r['notebook']:36s} {r['jobs']:4d} {'yes' if r['prestart'] else 'no':>4s} {r['per_submission_s']:7.1f} "
            f"{r['run_s'] or 0:7.1f} {r['kernel_start_s'] or 0:7.2f} {r['setup_cell_s'] or 0:7.1f} {share:>6s} "
            f"{r['grading_cell_s'] or 0:7.1f}  {r['full_marks']}/{r['submissions']}"
        )
    report = {
        "what": "tl_helpers grade on copies of the solution notebooks (benchmarks/grading.py)",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": available_cpus(),
            "cpu_count": os.cpu_count(),
        },
        "submissions_per_notebook": args.submissions,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
