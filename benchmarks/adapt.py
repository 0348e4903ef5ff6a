"""`adapt` on 1,000 images of 5 classes: does it finish within the budget it states?

Builds a folder of 200 EuroSAT images for each of 5 classes (seeded choice, copied from the unpacked
archive, ``find_eurosat()``), runs ``adapt`` on it with a cold decode cache, and writes planned vs spent
time, the decoding share and images/s to ``benchmarks/adapt.json`` and, under ``"adapt"``, to
``benchmarks/results.json``. Run it alone on the machine.

    python benchmarks/adapt.py [--per-class 200] [--budget-minutes 5] [--out benchmarks/adapt.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tl_helpers.adapt.run import adapt
from tl_helpers.data import find_eurosat

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Pasture", "PermanentCrop")


def build_folder(dest: Path, per_class: int, seed: int = 0) -> int:
    root = find_eurosat()
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        files = sorted((root / name).glob("*.jpg"))
        (dest / name).mkdir(parents=True)
        for i in sorted(rng.choice(len(files), size=per_class, replace=False)):
            shutil.copyfile(files[i], dest / name / files[i].name)
    return per_class * len(CLASSES)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=200)
    p.add_argument("--budget-minutes", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "adapt.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tl-bench-adapt-") as tmp:
        tmp = Path(tmp)
        n = build_folder(tmp / "eurosat5", args.per_class)
        t0 = time.perf_counter()
        result = adapt(
            tmp / "eurosat5", tmp / "model", budget_minutes=args.budget_minutes, augment="flip-rot90",
            cache=tmp / "cache", progress=False,
        )  # fmt: skip
        wall = time.perf_counter() - t0
    inspect = result.timings["inspect"]
    train_images = sum(s.image_passes for s in result.strategies if s.name != "probe") / 3  # passes = 3 per image
    trained_seconds = sum(result.timings.get(k, 0.0) for k in ("two-phase", "fine-tune"))
    figures = {
        "images": n,
        "classes": len(CLASSES),
        "budget_seconds": 60 * args.budget_minutes,
        "planned_seconds": result.planned_seconds,
        "spent_seconds": wall,
        "within_budget": wall <= 60 * args.budget_minutes,
        "spent_over_planned": wall / result.planned_seconds,
        "decode_share": inspect / wall,
        "decode_images_per_second": n / inspect,
        "train_images_per_second": train_images / trained_seconds if trained_seconds else None,
        "timings": result.timings,
        "chosen": result.chosen,
        "decision": result.decision,
        "val_accuracy": {s.name: s.val_accuracy for s in result.strategies},
        "epochs": next((s.settings["epochs"] for s in result.strategies if "epochs" in s.settings), 0),
        "test_accuracy": result.test_accuracy,
        "test_interval": result.test_interval,
        "curve": [(c.n_train, c.val_accuracy) for c in result.curve],
        "device": result.device,
    }
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    merge_into_results(figures)
    print(json.dumps(figures, indent=2))


def merge_into_results(figures: dict, path: Path = REPO / "benchmarks" / "results.json") -> None:
    """Add the figures under ``"adapt"`` to the course benchmarks' ``results.json`` (if it exists)."""
    if path.is_file():
        results = json.loads(path.read_text())
        results["adapt"] = figures
        path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
