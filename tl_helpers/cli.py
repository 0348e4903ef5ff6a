"""Command line: ``python -m tl_helpers doctor | data prepare | grade | private-data | exercises``.

Every failure on bad input ends with one line on stderr naming the file or
argument and the fix, and exit status 2 (1 for "not ready" in ``doctor``).
Parsing the arguments (and ``--help``) imports neither torch nor the course
modules; each command imports what it needs when it runs. ``grade-worker`` is
internal: ``grade`` starts it to run one submission.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence

__all__ = ["build_parser", "later_notebook_needs", "main"]


def _ok(flag: bool) -> str:
    return "OK " if flag else "!! "


def doctor(args: argparse.Namespace) -> int:
    """Print versions, device, and whether weights and data are found and valid."""
    import timm
    import torch
    import torchvision

    from tl_helpers import data, device, models, paths

    print(
        f"python       {platform.python_version()}  torch {torch.__version__}  torchvision "
        f"{torchvision.__version__}  timm {timm.__version__}"
    )
    dev = device.get_device(args.device)
    precision = device.choose_precision(dev)
    print(f"device       {device.describe(dev)}; autocast {precision.dtype}; grad scaler {precision.use_scaler}")
    ready = True

    try:
        t0 = time.perf_counter()
        model = models.load_backbone(models.DEFAULT_BACKBONE).eval()
        detail = f"{models.bundled_weights_path()} loaded strictly"
        top = _classify_cat(model)
        good = top is not None and "cat" in top
        detail += f"; a cat photo -> {top!r}" if top else ""
        print(f"{_ok(good)}weights   {detail} ({time.perf_counter() - t0:.1f}s)")
        ready &= good
    except Exception as exc:  # report, don't crash
        print(f"!! weights   {exc}")
        ready = False

    root = data.eurosat_root(args.data_dir)
    if data.has_class_folders(root):
        try:
            report = data.scan_folder(root)
            n = len(report.samples)
            good = n == data.EUROSAT_NUM_IMAGES
            print(
                f"{_ok(good)}data      {root}: {n} images in 10 classes"
                + ("" if good else f" (expected {data.EUROSAT_NUM_IMAGES}; re-extract the archive)")
            )
            ready &= good
        except data.DataError as exc:
            print(f"!! data      {exc}")
            ready = False
    else:
        archives = [p for p in data.candidate_archives(args.data_dir) if p.is_file()]
        if archives:
            try:
                data.verify_archive(archives[0])
                print(
                    f"OK data      archive {archives[0]} verified; it is extracted on first use "
                    "(or now: python -m tl_helpers data prepare)"
                )
            except data.DataError as exc:
                print(f"!! data      {exc}")
                ready = False
        else:
            from tl_helpers.getting_data import eurosat_missing_message

            if paths.downloads_allowed():
                print(
                    f"OK data      EuroSAT not found locally; {paths.ALLOW_DOWNLOAD_ENV}=1, so it is downloaded "
                    "on first use (or now: python -m tl_helpers data prepare)"
                )
            else:
                message = eurosat_missing_message(
                    args.data_dir, (), url=data.DOWNLOAD_URL, md5=next(iter(data.KNOWN_MD5))
                ).replace("\n", "\n            ")
                print(f"!! data      {message}")
                ready = False
    for line in later_notebook_needs(args.data_dir):
        print(line)
    print(f"cache        {paths.cache_dir(args.data_dir)}")
    print("READY" if ready else "NOT READY: fix the lines marked !!")
    return 0 if ready else 1


def later_notebook_needs(data_dir: str | os.PathLike | None = None) -> list[str]:
    """One line each for what only notebooks 08-11 need (``OK`` found, ``--`` missing: those notebooks stop).

    They do not decide READY, which is about notebooks 00-07.
    """
    from tl_helpers import models, text
    from tl_helpers.adapt.examples import find_fashion_mnist

    lines = []
    try:
        import transformers

        lines.append(f"OK encoder   {text.encoder_path()} (transformers {transformers.__version__}; notebooks 08, 11)")
    except Exception as exc:  # report, don't crash
        lines.append(f"-- encoder   notebooks 08 and 11 need it: {' '.join(str(exc).split())}")
    try:
        lines.append(f"OK sst2      {text.find_sst2(data_dir, verify=False, allow_download=False)} (notebooks 08, 11)")
    except Exception as exc:
        lines.append(f"-- sst2      notebooks 08 and 11 need it: {' '.join(str(exc).split())}")
    try:
        lines.append(f"OK fashion   {find_fashion_mnist(allow_download=False)} (notebook 09)")
    except Exception as exc:
        lines.append(f"-- fashion   notebook 09 needs it: {' '.join(str(exc).split())}")
    for name in ("efficientnet_lite1", "efficientnet_lite2"):
        label = name.replace("efficientnet_", "")
        try:
            lines.append(f"OK {label:<9} {models.bundled_weights_path(name)} (notebook 10)")
        except Exception as exc:
            lines.append(f"-- {label:<9} notebook 10 needs it: {' '.join(str(exc).split())}")
    return lines


def _classify_cat(model) -> str | None:
    try:
        from skimage.data import chelsea
    except ImportError:
        return None
    import torch
    import torch.nn.functional as F

    from tl_helpers.models import get_preprocessing, imagenet_class_names

    pre = get_preprocessing(model)
    x = torch.from_numpy(chelsea()).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=224, mode=pre.interpolation, antialias=True).clamp(0, 1)
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return imagenet_class_names()[int(model(x).argmax())]


def data_prepare(args: argparse.Namespace) -> int:
    """Locate, verify, extract; build the split and the tensor caches."""
    from tl_helpers import data

    if args.archive is not None and not args.archive.exists():
        raise data.DataNotFoundError(f"--archive {args.archive} does not exist. Fix: give the path of EuroSAT_RGB.zip.")
    t0 = time.perf_counter()
    root = data.find_eurosat(args.data_dir, archive=args.archive, verify=not args.no_verify)
    report = data.scan_folder(root)
    split = data.make_split(report.samples, seed=args.seed)
    from tl_helpers.paths import cache_dir

    for name in ("train", "val", "test"):
        tensors = data.decode_samples(
            root, split[name], cache=cache_dir(args.data_dir), name=name, progress=not args.quiet
        )
        print(f"{name:5s} {len(tensors):5d} images, {tensors.images.shape[-1]}px, cached")
    print(
        f"EuroSAT ready at {root} ({len(report.samples)} images; split {split.digest()[:12]}) "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return 0


def grade_command(args: argparse.Namespace) -> int:
    """Grade notebooks or folders of submissions; write a gradebook and per-student feedback."""
    import json

    from tl_helpers import grading

    grading.check_platform()  # before anything else: refuse rather than give every learner zero
    if args.private_data is not None:
        from tl_helpers.private_data import load_private_data

        found = load_private_data(args.private_data)
        print(f"private data: {args.private_data}: {found.describe()}", file=sys.stderr)
    results = grading.grade(
        args.paths,
        out=args.out,
        cell_timeout=args.cell_timeout,
        total_timeout=args.total_timeout,
        progress=not args.json,
        jobs=args.jobs,
        private_data=args.private_data,
    )
    if args.summary is not None:
        grading.write_summary(results, args.summary)
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2, ensure_ascii=False))
    else:
        print(grading.summary_table(results))
        if args.out:
            print(f"gradebook: {args.out}; feedback: {args.out.parent / (args.out.stem + '_feedback')}/")
        if args.summary is not None:
            print(f"class summary: {args.summary}")
    return 0


def private_data_command(args: argparse.Namespace) -> int:
    """Make the single file of instructor data ``grade --private-data`` takes, or check a folder or file."""
    from tl_helpers import private_data

    if args.private_data_command == "make":
        out = private_data.save_private_data(args.out, eurosat=args.eurosat, digits=args.digits)
        print(f"wrote {out}: {private_data.load_private_data(out).describe()}")
        return 0
    print(f"{args.path}: {private_data.load_private_data(args.path).describe()}")
    return 0


def exercises_command(args: argparse.Namespace) -> int:
    """Generate exercises/ from solutions/, or check that the committed exercises are up to date."""
    from tl_helpers import exercises

    if args.exercises_command == "build":
        for path in exercises.build():
            print(f"wrote {path}")
        return 0
    problems = exercises.differences()
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print("exercises/ is up to date with solutions/")
    return 1 if problems else 0


def adapt_command(args: argparse.Namespace) -> int:
    from tl_helpers.adapt.run import adapt

    adapt(
        args.folder,
        args.out,
        budget_minutes=args.budget_minutes,
        image_size=args.image_size,
        seed=args.seed,
        epochs=args.epochs,
        augment=args.augment,
        min_per_class=args.min_per_class,
        device=args.device,
        onnx=args.onnx,
        progress=not args.quiet,
    )
    return 0


def predict_command(args: argparse.Namespace) -> int:
    from tl_helpers.adapt.export import load_model, predict_files, write_predictions_csv

    model, config = load_model(args.model)
    results = predict_files((model, config), args.images, device=args.device or "cpu")
    failed = 0
    for r in results:
        if r.error is not None:
            failed += 1
            print(f"error: {r.error}", file=sys.stderr)
        elif args.csv is None:
            print(f"{r.path}\t{r.label}\t{r.probability:.3f}")
    if args.csv is not None:
        write_predictions_csv(results, args.csv)
        print(f"{len(results) - failed} predictions written to {args.csv}" + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


def grade_worker_command(args: argparse.Namespace) -> int:
    """Internal (started by ``grade``): run one submission as described by a job file."""
    from tl_helpers import runner

    return runner.worker_main(args.job)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m tl_helpers`` (imports nothing heavy)."""
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m tl_helpers", description="Transfer-learning course helpers.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("doctor", help="check versions, device, weights and data")
    p.add_argument("--data-dir", type=Path, default=None, help="data folder (default $TL_DATA_DIR or ./data)")
    p.add_argument("--device", default=None, help="force a device (cpu, cuda, mps)")
    p.set_defaults(func=doctor)

    d = sub.add_parser("data", help="data commands")
    dsub = d.add_subparsers(dest="data_command", required=True)
    prep = dsub.add_parser("prepare", help="locate, verify and extract EuroSAT; build split and caches")
    prep.add_argument("--archive", type=Path, default=None, help="path of EuroSAT_RGB.zip / EuroSAT.zip")
    prep.add_argument("--data-dir", type=Path, default=None, help="data folder (default $TL_DATA_DIR or ./data)")
    prep.add_argument("--seed", type=int, default=0, help="split seed (the course uses 0)")
    prep.add_argument("--no-verify", action="store_true", help="skip the archive checksum")
    prep.add_argument("--quiet", action="store_true", help="no progress bars")
    prep.set_defaults(func=data_prepare)

    from tl_helpers.runner import CELL_TIMEOUT, TOTAL_TIMEOUT

    g = sub.add_parser("grade", help="grade exercise notebooks (files or folders) in fresh kernels")
    g.add_argument("paths", nargs="+", help="submitted notebooks or folders of them")
    g.add_argument("--out", type=Path, default=None, help="gradebook CSV (feedback goes to <name>_feedback/)")
    g.add_argument("--json", action="store_true", help="print one JSON object per submission")
    g.add_argument(
        "--summary", type=Path, default=None, help="one-page HTML class summary (pass rates, failures, hints)"
    )
    g.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT, help=f"seconds per cell (default {CELL_TIMEOUT})")
    g.add_argument(
        "--total-timeout", type=int, default=TOTAL_TIMEOUT, help=f"seconds per submission (default {TOTAL_TIMEOUT})"
    )
    g.add_argument("--jobs", type=int, default=1, help="submissions graded at the same time (default 1)")
    g.add_argument(
        "--private-data",
        type=Path,
        default=None,
        metavar="PATH",
        help="grade the outcome exercises on your own data instead of the built-in private splits: a folder "
        "(eurosat/<Class>/*.jpg and/or digits.npz) or a file from `private-data make`",
    )
    g.set_defaults(func=grade_command)

    pd = sub.add_parser("private-data", help="instructor data for `grade --private-data`")
    pdsub = pd.add_subparsers(dest="private_data_command", required=True)
    make = pdsub.add_parser(
        "make",
        help="write one .npz file from EuroSAT class folders and/or digits",
        description="Write one .npz file to grade with (grade --private-data FILE). --eurosat: a folder of "
        "EuroSAT class folders (<Class>/*.jpg, 64 x 64 RGB; any number per class). --digits: an .npz file with "
        "X (N x 8 x 8 floats in [0, 1], like sklearn's digits.images / 16) and y (labels 0-9).",
    )
    make.add_argument("--eurosat", type=Path, default=None, metavar="FOLDER", help="folder of <Class>/ image folders")
    make.add_argument("--digits", type=Path, default=None, metavar="FILE", help=".npz file with X and y")
    make.add_argument("--out", type=Path, required=True, help="the file to write (e.g. private.npz)")
    make.set_defaults(func=private_data_command)
    show = pdsub.add_parser("check", help="load a private-data folder or file and say what it holds")
    show.add_argument("path", type=Path, help="folder or file")
    show.set_defaults(func=private_data_command)

    e = sub.add_parser("exercises", help="generate exercises/ from solutions/")
    esub = e.add_subparsers(dest="exercises_command", required=True)
    esub.add_parser("build", help="regenerate exercises/ from solutions/").set_defaults(func=exercises_command)
    esub.add_parser("check", help="exit 1 when exercises/ differs from what solutions/ generates").set_defaults(
        func=exercises_command
    )

    a = sub.add_parser(
        "adapt",
        help="train a classifier on your own images (one sub-folder per class), the course's way",
        description="Inspect the folder, split it, measure a linear probe, two-phase fine-tuning and (if the "
        "budget allows) fine-tuning within the budget, keep the best beyond the noise, test it once, and write the "
        "model, its config and a report (report.html) to OUT.",
    )
    a.add_argument("folder", type=Path, help="folder with one sub-folder of images per class")
    a.add_argument("--out", type=Path, required=True, help="output folder (replaced atomically)")
    a.add_argument("--budget-minutes", type=float, default=10.0, help="time the run may take (default 10)")
    a.add_argument("--image-size", type=int, default=64, help="side length to decode and train at (default 64)")
    a.add_argument("--seed", type=int, default=0, help="seed of the split, training and intervals (default 0)")
    a.add_argument("--epochs", type=int, default=None, help="fix the fine-tuning epochs (default: the budget decides)")
    a.add_argument(
        "--augment",
        choices=("flip", "flip-rot90", "none"),
        default="flip",
        help="training augmentation: flip (photos), flip-rot90 (top-down imagery), none",
    )
    a.add_argument("--min-per-class", type=int, default=5, help="classes with fewer images stop the run (default 5)")
    a.add_argument("--device", default=None, help="force a device (cpu, cuda, mps)")
    a.add_argument("--onnx", action="store_true", help="also write model.onnx, verified against PyTorch")
    a.add_argument("--quiet", action="store_true", help="no progress bars")
    a.set_defaults(func=adapt_command)

    pr = sub.add_parser("predict", help="apply a model written by `adapt` to images or folders")
    pr.add_argument("model", type=Path, help="the OUT folder of `adapt`")
    pr.add_argument("images", nargs="+", type=Path, help="image files or folders")
    pr.add_argument("--csv", type=Path, default=None, help="write path,label,probability,error rows here")
    pr.add_argument("--device", default=None, help="device (default cpu)")
    pr.set_defaults(func=predict_command)

    w = sub.add_parser("grade-worker", help="internal: run one submission for `grade` (from a job file)")
    w.add_argument("job", type=Path, help="the job file `grade` wrote (deleted once read)")
    w.set_defaults(func=grade_worker_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, ValueError) as exc:
        message = " ".join(str(exc).split()) if "\n" not in str(exc) else str(exc)
        print(f"error: {message}", file=sys.stderr)
        return 2
