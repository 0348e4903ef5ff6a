"""`make gpu-check`: the course's GPU paths on a real GPU, in one run of under 8 minutes, figures to one JSON.

    python benchmarks/gpu_check.py [--out build/gpu_check.json]       # what `make gpu-check` runs
    python benchmarks/gpu_check.py --make-subset .gpu-subset          # on any machine with EuroSAT: a small copy

On a CUDA machine it

1. runs the fast tests marked ``requires_cuda`` with ``TL_REQUIRE_CUDA=1`` (a missing GPU fails them);
2. trains notebook 06's capstone recipe (``benchmarks/run.py``'s ``capstone_fit``: 5 epochs, 64 px, stem and
   stages 0-1 frozen) on the real EuroSAT quick-check split and scores it on the test split;
3. runs ``make bench BENCH_ARGS=--quick`` (``benchmarks/run.py --quick``), which measures among others fit's
   AMP speed-up over fp32 (``amp_speedup``, both through ``fit``);

and writes the device name, compute capability, precision chosen, images/s, capstone accuracy and time and
the AMP speed-up to ``--out``. Without CUDA it prints one line, ``no CUDA GPU: skipping the CUDA parts``,
writes ``{"cuda": false, ...}`` and exits 0.

EuroSAT is found as everywhere (``TL_EUROSAT_ARCHIVE``, ``TL_DATA_DIR``), or in ``--data-dir``: by default
``.gpu-subset`` when it exists, a copy made by ``--make-subset`` of the quick-check split's 9,000 JPEGs (about
31 MB, small enough to travel with a checkout) and of the split itself, so the GPU trains and tests on exactly
the images the CPU figures were measured on. The exit status is 0 when every part that ran passed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "build" / "gpu_check.json"
DEFAULT_SUBSET = REPO / ".gpu-subset"
SPLIT_FILE = "split.json"
SKIP_LINE = "no CUDA GPU: skipping the CUDA parts"
TEST_SELECTION = "requires_cuda and not slow"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON with the figures (default build/...)")
    p.add_argument("--data-dir", type=Path, default=None, help="EuroSAT data folder (default .gpu-subset if there)")
    p.add_argument("--make-subset", type=Path, default=None, metavar="DIR", help="copy the split to DIR and stop")
    p.add_argument("--skip-tests", action="store_true", help="leave out the requires_cuda tests")
    p.add_argument("--skip-capstone", action="store_true", help="leave out the capstone recipe")
    p.add_argument("--skip-bench", action="store_true", help="leave out `make bench BENCH_ARGS=--quick`")
    p.add_argument("--bench-timeout", type=int, default=330, help="seconds for the quick benchmark (default 330)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- the data


def make_subset(out: Path, *, train_per_class: int = 500, val_per_class: int = 100, test_per_class: int = 300) -> Path:
    """Copy the quick-check split's images to ``out/eurosat/2750/<Class>/`` and the split to ``out/split.json``."""
    sys.path.insert(0, str(REPO))
    from tl_helpers import data

    root = data.find_eurosat()
    split = data.make_split(
        data.scan_folder(root).samples,
        train_per_class=train_per_class,
        val_per_class=val_per_class,
        test_per_class=test_per_class,
    )
    target = Path(out) / "eurosat" / "2750"
    for name in ("train", "val", "test"):
        for rel, _ in split[name]:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, target / rel)
    manifest = {name: [[rel, label] for rel, label in split[name]] for name in ("train", "val", "test")}
    manifest["digest"] = split.digest()
    (Path(out) / SPLIT_FILE).write_text(json.dumps(manifest))
    return Path(out)


def load_splits(data_dir: Path | None) -> dict:
    """The quick-check split as tensors: from ``data_dir``'s ``split.json`` when it has one, else as the course does."""
    from tl_helpers import data

    manifest = Path(data_dir) / SPLIT_FILE if data_dir is not None else None
    if manifest is None or not manifest.is_file():
        return data.load_eurosat(data_dir_=data_dir, progress=False)
    split = json.loads(manifest.read_text())
    root = data.find_eurosat(data_dir)
    return {
        name: data.decode_samples(
            root,
            [(rel, int(label)) for rel, label in split[name]],
            cache=data.cache_dir(data_dir),
            name=f"gpucheck-{name}",
            progress=False,
        )
        for name in ("train", "val", "test")
    }


# ----------------------------------------------------------------------------- the parts


def device_figures() -> dict:
    """Which GPU, its compute capability, and the precision ``fit`` chooses on it."""
    import torch

    from tl_helpers import device as dev

    gpu = torch.device("cuda")
    precision = dev.choose_precision(gpu)
    major, minor = torch.cuda.get_device_capability(gpu)
    return {
        "device_name": torch.cuda.get_device_name(gpu),
        "capability": f"{major}.{minor}",
        "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[precision.dtype],
        "grad_scaler": precision.use_scaler,
        "memory_gib": round(torch.cuda.get_device_properties(gpu).total_memory / 2**30, 1),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def run_cuda_tests(report: Path) -> dict:
    """The fast ``requires_cuda`` tests, with ``TL_REQUIRE_CUDA=1`` so that a skip becomes a failure."""
    # only the files that hold such tests: a module the GPU machine cannot import must not fail the run
    files = sorted(
        str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py") if "mark.requires_cuda" in p.read_text()
    )
    cmd = [sys.executable, "-m", "pytest", *files, "-m", TEST_SELECTION, "-q", "-p", "no:cacheprovider"]
    cmd += [f"--junitxml={report}"]
    env = dict(os.environ, TL_REQUIRE_CUDA="1", CUBLAS_WORKSPACE_CONFIG=":4096:8")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, timeout=240)
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if report.is_file():
        suite = ET.parse(report).getroot()
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        counts = {k: int(suite.get(k, 0)) for k in counts}
    return {"returncode": proc.returncode, "seconds": time.perf_counter() - t0, "selection": TEST_SELECTION, **counts}


def run_capstone(data_dir: Path | None) -> dict:
    """Notebook 06's capstone recipe on the GPU, as ``benchmarks/run.py`` trains it (``capstone_fit``)."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("bench_run", REPO / "benchmarks" / "run.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    t0 = time.perf_counter()
    splits = load_splits(data_dir)
    load_s = time.perf_counter() - t0
    row = bench.capstone_fit(splits, torch.device("cuda"), pretrained=True)
    return {**row, "data_load_s": load_s, "train_images": len(splits["train"]), "test_images": len(splits["test"])}


def run_quick_bench(out: Path, data_dir: Path | None, timeout: int) -> dict:
    """``make bench BENCH_ARGS=--quick``: the same script, its results written next to ours."""
    env = dict(os.environ)
    if data_dir is not None:
        env["TL_DATA_DIR"] = str(data_dir)
    cmd = [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--out", str(out)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, timeout=timeout)
        returncode = proc.returncode
    except subprocess.TimeoutExpired:
        returncode = "timeout"
    result: dict = {"returncode": returncode, "seconds": time.perf_counter() - t0, "results": str(out)}
    if returncode == 0 and out.is_file():
        bench = json.loads(out.read_text())
        keys = ("fit_over_bare", "fit_path_speedup", "train_speedup", "amp_speedup", "data_share_of_step")
        result.update({k: bench.get(k) for k in keys})
        result.update(
            channels_last_speedup_train=bench.get("channels_last_speedup_train"),
            matmul_tflop_per_s=bench["matmul_flops_per_s"] / 1e12 if bench.get("matmul_flops_per_s") else None,
            train_paths=bench.get("train_paths"),
        )
    return result


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.make_subset is not None:
        out = make_subset(args.make_subset)
        print(f"wrote the quick-check split's images and {SPLIT_FILE} to {out}")
        return 0
    import torch

    sys.path.insert(0, str(REPO))
    result: dict = {
        "cuda": torch.cuda.is_available(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not result["cuda"]:
        print(SKIP_LINE)
        result["skipped"] = SKIP_LINE
        args.out.write_text(json.dumps(result, indent=2))
        return 0

    data_dir = args.data_dir or (DEFAULT_SUBSET if (DEFAULT_SUBSET / "eurosat").is_dir() else None)
    result["data_dir"] = str(data_dir) if data_dir is not None else None
    result.update(device_figures())
    print("gpu-check on", result["device_name"], "capability", result["capability"], "->", result["precision"])
    ok = True
    t0 = time.perf_counter()
    if not args.skip_tests:
        result["tests"] = run_cuda_tests(args.out.with_name("gpu_check_tests.xml"))
        ok &= result["tests"]["returncode"] == 0
    for name, part in (
        ("capstone", None if args.skip_capstone else lambda: run_capstone(data_dir)),
        (
            "bench_quick",
            None
            if args.skip_bench
            else lambda: run_quick_bench(args.out.with_name("bench_quick.json"), data_dir, args.bench_timeout),
        ),
    ):
        if part is None:
            continue
        try:
            result[name] = part()
        except Exception as exc:  # one part failing still leaves the others' figures in the JSON
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        ok &= "error" not in result[name] and result[name].get("returncode", 0) == 0
        args.out.write_text(json.dumps(result, indent=2, default=str))  # what there is so far, if a later part hangs
    capstone, bench = result.get("capstone", {}), result.get("bench_quick", {})
    result["summary"] = {
        "device_name": result["device_name"],
        "capability": result["capability"],
        "precision": result["precision"],
        "images_per_s": capstone.get("images_per_s"),
        "capstone_test_acc": capstone.get("test_acc"),
        "capstone_train_s": capstone.get("wall_s"),
        "amp_speedup": bench.get("amp_speedup"),
        "seconds": time.perf_counter() - t0,
        "ok": ok,
    }
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result["summary"], indent=2, default=str))
    print("wrote", args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
