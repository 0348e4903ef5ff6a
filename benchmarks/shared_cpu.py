"""One training cell on a shared CPU: alone, then two at once, with and without the course's kernel env.

    python benchmarks/shared_cpu.py                      # ≈ 5 min; run it on an otherwise idle machine
    python benchmarks/shared_cpu.py --steps 2 --batch 8  # smoke run (seconds): checks that it works

Each measurement starts fresh processes the way a kernel starts (the variant's environment is set
before torch loads). A child builds EfficientNet-Lite0 with a new 10-class head, runs one warm-up
step, reports "ready", waits for "go" (so that the two of a pair train at the same time), then times
``--steps`` AdamW steps on random 64 px images: the training cell of a notebook. ``pair_over_alone``
is the slower of the pair's times over the alone time: 2 when two jobs share the CPUs fairly; spinning
OpenMP threads starved of CPU make it far larger. Writes ``benchmarks/shared_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tl_helpers.runner import KERNEL_ENV  # noqa: E402  (torch-free: this process never loads torch)

VARIANTS: dict[str, dict] = {
    # the course's kernels: threads spin for 1,000 turns, then sleep; threads from available_cpus()
    "kernel env": {"env": dict(KERNEL_ENV), "configure_threads": True},
    # no spinning at all (the course's kernels before GOMP_SPINCOUNT=1000)
    "no spin": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "configure_threads": True},
    # torch's defaults: threads spin (GOMP_SPINCOUNT 300,000) while they wait, one thread per CPU in the affinity
    "torch defaults": {"env": {}, "configure_threads": False},
    # a longer spin, then sleep
    "short spin": {"env": {"GOMP_SPINCOUNT": "10000"}, "configure_threads": True},
}


def child(args: argparse.Namespace) -> None:
    """One training cell: report ready after the warm-up, wait for go, time the steps, print JSON."""
    import torch
    from torch import nn

    from tl_helpers import device, models

    threads = device.configure_cpu_threads() if args.configure_threads else torch.get_num_threads()
    torch.manual_seed(0)
    model = models.load_backbone("efficientnet_lite0", num_classes=10).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    step()  # warm-up: allocations, one-time setup
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "threads": threads}), flush=True)


def environment(variant: dict) -> dict[str, str]:
    """This process's environment without OpenMP settings, plus the variant's (as a kernel would get it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "MKL_NUM", "OPENBLAS_NUM"))}
    env.update(variant["env"])
    return env


def run_together(n: int, variant: dict, args: argparse.Namespace) -> list[dict]:
    """Start ``n`` children, wait until all are ready, let them go at once; their reports."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--steps", str(args.steps)]
    cmd += ["--batch", str(args.batch), "--size", str(args.size)]
    if variant["configure_threads"]:
        cmd.append("--configure-threads")
    procs = [
        subprocess.Popen(cmd, env=environment(variant), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(n)
    ]
    try:
        for proc in procs:
            _read_until(proc, lambda line: line == "ready")
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = [json.loads(_read_until(proc, lambda line: line.startswith("{"))) for proc in procs]
        for proc in procs:
            proc.wait(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return reports


def _read_until(proc: subprocess.Popen, wanted) -> str:
    """The first line of ``proc``'s output that ``wanted`` accepts (other output is skipped)."""
    for raw in proc.stdout:
        line = raw.strip()
        if wanted(line):
            return line
    raise RuntimeError(f"a child stopped early (exit status {proc.wait()})")


def measure(args: argparse.Namespace) -> dict:
    """For each variant: alone, then a pair; best of ``--repeats`` each."""
    results: dict = {}
    for name in args.variants:
        variant = VARIANTS[name]
        alone = min(run_together(1, variant, args)[0]["seconds"] for _ in range(args.repeats))
        pairs = [run_together(2, variant, args) for _ in range(args.repeats)]
        pair = min(pairs, key=lambda reports: max(r["seconds"] for r in reports))
        slowest = max(r["seconds"] for r in pair)
        results[name] = {
            "env": variant["env"],
            "threads": pair[0]["threads"],
            "alone_s": round(alone, 2),
            "pair_s": [round(r["seconds"], 2) for r in pair],
            "pair_over_alone": round(slowest / alone, 2),
        }
        times = " / ".join(f"{r['seconds']:.1f}" for r in pair)
        print(
            f"{name:15s} threads {pair[0]['threads']}  alone {alone:6.1f}s  pair {times}s  "
            f"pair/alone {slowest / alone:.2f}",
            flush=True,
        )
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60, help="training steps timed (default 60: about 25 s alone)")
    p.add_argument("--batch", type=int, default=32, help="images per step (default 32)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--repeats", type=int, default=1, help="measure each case this often, keep the best")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="what to compare")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "shared_cpu.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--configure-threads", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    from tl_helpers.device import available_cpus  # imports torch here only; the children load their own

    machine = {
        "cpu_count": os.cpu_count(),
        "available_cpus": available_cpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    print("shared CPU benchmark on", machine, f"({args.steps} steps of {args.batch} x {args.size}px)", flush=True)
    res = {
        "machine": machine,
        "workload": {"steps": args.steps, "batch": args.batch, "size": args.size},
        "variants": measure(args),
    }
    Path(args.out).write_text(json.dumps(res, indent=2))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
