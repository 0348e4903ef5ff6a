"""``adapt``: inspect a folder of images, measure the course's strategies within a budget, keep one, report.

The steps, each a function of this package (notebook 09 calls them one by one):

1. :func:`~tl_helpers.adapt.inspection.inspect_folder` reads and decodes every file once (cached by content)
   and reports unreadable files, duplicates and label conflicts.
2. :func:`~tl_helpers.adapt.strategies.split_indices`: stratified, seeded train / validation / test parts.
3. :func:`~tl_helpers.adapt.strategies.make_plan` sizes the runs from measured throughput, before training.
4. The probe, two-phase fine-tuning and (if the budget allows) fine-tuning from a random head, each scored
   on validation; :func:`~tl_helpers.adapt.strategies.decide` keeps one.
5. The kept model meets the test part once; the label curve; the model, config and report are written to
   ``out`` atomically (:func:`~tl_helpers.adapt.export.atomic_output_dir`).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tl_helpers.adapt.result import AdaptResult, ConfusedPair, StrategyResult
from tl_helpers.adapt.strategies import (
    decide,
    eval_loader,
    features_of,
    fine_tune,
    label_curve,
    make_plan,
    measure_throughput,
    probe_head,
    split_indices,
    train_probe,
    wilson_interval,
)
from tl_helpers.data import ImageTensors
from tl_helpers.device import describe, get_device, seed_everything
from tl_helpers.models import DEFAULT_BACKBONE, get_preprocessing, head_in_features, load_backbone, replace_head
from tl_helpers.train import predict

__all__ = ["adapt", "build_model", "config_for", "test_report", "versions"]


def versions() -> dict[str, str]:
    """Versions of the packages that decide the numbers."""
    out = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "timm", "tl-helpers", "scikit-learn", "numpy", "pillow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def build_model(backbone: str, num_classes: int, *, head: nn.Linear | None = None, seed: int = 0) -> nn.Module:
    """The pretrained backbone with a new head: a copy of ``head`` (the probe's) or a seeded random one."""
    model = load_backbone(backbone)
    torch.manual_seed(seed)
    new = replace_head(model, num_classes)
    if head is not None:
        with torch.no_grad():
            new.weight.copy_(head.weight)
            new.bias.copy_(head.bias)
    return model


def config_for(model: nn.Module, classes: list[str], image_size: int, recipe: dict[str, Any], seed: int) -> dict:
    """The ``config.json`` of a kept model (what ``predict`` needs to apply it the same way)."""
    pre = get_preprocessing(model)
    return {
        "format": 1,
        "backbone": getattr(model, "tl_name", DEFAULT_BACKBONE),
        "classes": list(classes),
        "image_size": image_size,
        "preprocessing": {
            "mean": list(pre.mean),
            "std": list(pre.std),
            "resize": f"shorter side to {image_size}, bicubic, centre crop",
        },
        "recipe": recipe,
        "seed": seed,
        "versions": versions(),
    }


def test_report(
    model: nn.Module, test: ImageTensors, image_size: int, device: torch.device, *, top_pairs: int = 5
) -> dict[str, Any]:
    """The kept model on the test part (the only time it is touched): accuracy, interval, per class, confusion."""
    loader = eval_loader(model, test, image_size)
    preds, labels, _ = predict(model, loader, device)
    preds, labels = preds.numpy(), labels.numpy()
    k = len(test.classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels, preds), 1)
    correct = int((preds == labels).sum())
    per_class = {}
    for i, name in enumerate(test.classes):
        tp = int(confusion[i, i])
        predicted, support = int(confusion[:, i].sum()), int(confusion[i].sum())
        per_class[name] = {
            "precision": tp / predicted if predicted else 0.0,
            "recall": tp / support if support else 0.0,
            "support": support,
        }
    pairs = []
    off = [(int(confusion[i, j]), i, j) for i in range(k) for j in range(k) if i != j and confusion[i, j]]
    for count, i, j in sorted(off, key=lambda t: (-t[0], t[1], t[2]))[:top_pairs]:
        examples = np.flatnonzero((labels == i) & (preds == j))[:4].tolist()
        pairs.append(ConfusedPair(test.classes[i], test.classes[j], count, examples))
    return {
        "accuracy": correct / len(labels),
        "interval": wilson_interval(correct, len(labels)),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "pairs": pairs,
    }


def adapt(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    budget_minutes: float = 10.0,
    image_size: int = 64,
    seed: int = 0,
    epochs: int | None = None,
    augment: str = "flip",
    min_per_class: int = 5,
    device: str | torch.device | None = None,
    onnx: bool = False,
    backbone: str = DEFAULT_BACKBONE,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> AdaptResult:
    """Train a classifier for the images in ``root`` (one sub-folder per class) the course's way.

    Args:
        root: The folder: ``root/<class>/<image>``.
        out: Where the model (``model.safetensors``, ``config.json``) and the report go; written
            atomically, so an interrupted run leaves it as it was.
        budget_minutes: Time the whole run may take; the plan is sized to it from measured speed.
        image_size: Side length the images are decoded to and trained at.
        seed: Split, initialisation, shuffling and bootstrap seed.
        epochs: Fix the epochs of each fine-tuning run (otherwise the budget decides; fix it to
            reproduce a run exactly, since measured speed differs between machines).
        augment: ``"flip"``, ``"flip-rot90"`` (top-down imagery) or ``"none"``.
        min_per_class: Classes with fewer usable images stop the run.
        device: Force a device (default: CUDA, then MPS, then CPU).
        onnx: Also write ``model.onnx``, verified against PyTorch.
        backbone: The pretrained network.
        cache: Folder of the decode cache (default: the course's cache folder).
        progress: Progress bars.
        log: Where the run's lines go.

    Raises:
        FolderError: the folder cannot be used (the message names what and the fix).
        OutputError: ``out`` cannot be written (checked before any training).
    """
    from tl_helpers.adapt.export import atomic_output_dir, check_output_dir, export_onnx, save_model
    from tl_helpers.adapt.inspection import inspect_folder
    from tl_helpers.adapt.report import write_report

    t_start = time.perf_counter()
    check_output_dir(out)
    seed_everything(seed)
    device = get_device(device)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    inspection = inspect_folder(
        root, image_size=image_size, min_per_class=min_per_class, cache=cache, progress=progress
    )
    timings["inspect"] = time.perf_counter() - t0
    data = inspection.data
    classes = list(data.classes)
    log(f"{len(data)} usable images in {len(classes)} classes (inspection {timings['inspect']:.1f} s)")
    for line in inspection.problems_text():
        log(f"  {line}")

    parts = split_indices(data.labels, seed)
    train, val, test = (data.subset(parts[k]) for k in ("train", "val", "test"))
    split_sizes = {
        k: {c: int((data.labels[parts[k]] == i).sum()) for i, c in enumerate(classes)} for k in ("train", "val", "test")
    }
    log(f"split: {len(train)} train, {len(val)} validation, {len(test)} test (stratified, seed {seed})")

    t0 = time.perf_counter()
    model = load_backbone(backbone)
    throughput = measure_throughput(model, image_size, device)
    timings["measure"] = time.perf_counter() - t0
    spent = time.perf_counter() - t_start
    plan = make_plan(len(train), len(val), len(test), throughput, budget_minutes * 60, spent=spent, epochs=epochs)
    log(plan.text() + f" (budget {budget_minutes:g} min, {describe(device)})")

    t0 = time.perf_counter()
    X_train, y_train = features_of(model, train, image_size, device, progress=progress, desc="features train")
    X_val, y_val = features_of(model, val, image_size, device, progress=progress, desc="features val")
    timings["features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clf, C, scores, probe_correct = train_probe(X_train, y_train, X_val, y_val, seed=seed)
    timings["probe"] = time.perf_counter() - t0
    head = probe_head(clf, head_in_features(model))
    strategies = [
        StrategyResult(
            "probe",
            float(probe_correct.mean()),
            probe_correct.tolist(),
            {"C": C, "val_accuracy_by_C": {str(c): s for c, s in scores.items()}},
            planned_seconds=plan.seconds["features"] + plan.seconds["probe"],
            seconds=timings["features"] + timings["probe"],
            image_passes=len(train) + len(val),
        )
    ]
    log(f"probe: {100 * strategies[0].val_accuracy:.1f} % on validation (C={C:g})")
    del model

    models: dict[str, nn.Module] = {}
    runs = [("two-phase", plan.run_two_phase, head), ("fine-tune", plan.run_fine_tune, None)]
    for name, run, start_head in runs:
        if not run:
            continue
        t0 = time.perf_counter()
        seed_everything(seed)
        candidate = build_model(backbone, len(classes), head=start_head, seed=seed)
        correct, settings, passes = fine_tune(
            candidate, train, val, epochs=plan.epochs, image_size=image_size, device=device, seed=seed,
            augment=augment, progress=progress,
        )  # fmt: skip
        settings["head_start"] = "the probe's head" if start_head is not None else "random"
        timings[name] = time.perf_counter() - t0
        strategies.append(
            StrategyResult(
                name, float(correct.mean()), correct.tolist(), settings, plan.seconds[name], timings[name], passes
            )
        )
        models[name] = candidate.cpu()
        log(f"{name}: {100 * strategies[-1].val_accuracy:.1f} % on validation ({timings[name]:.0f} s)")

    chosen, comparisons, decision = decide(strategies, seed=seed)
    log(decision)
    final = models.get(chosen) or build_model(backbone, len(classes), head=head, seed=seed)
    final.eval()

    t0 = time.perf_counter()
    tested = test_report(final, test, image_size, device)
    timings["test"] = time.perf_counter() - t0
    low, high = tested["interval"]
    log(
        f"test: {100 * tested['accuracy']:.1f} % on {len(test)} images "
        f"(95 % interval {100 * low:.1f} to {100 * high:.1f})"
    )
    curve, curve_text = label_curve(X_train, y_train, X_val, y_val, C=C, seed=seed)
    log(curve_text)

    recipe = {"strategy": chosen, **next(s.settings for s in strategies if s.name == chosen)}
    result = AdaptResult(
        root=str(Path(root)),
        classes=classes,
        inspection=inspection.summary(),
        split_sizes=split_sizes,
        strategies=strategies,
        comparisons=comparisons,
        chosen=chosen,
        decision=decision,
        test_accuracy=float(tested["accuracy"]),
        test_interval=(float(low), float(high)),
        per_class=tested["per_class"],
        confusion=tested["confusion"],
        confused_pairs=tested["pairs"],
        test_files=list(test.files),
        curve=curve,
        curve_text=curve_text,
        planned_seconds=float(spent + plan.total),
        spent_seconds=0.0,
        timings=timings,
        device=describe(device),
        seed=seed,
        image_size=image_size,
        backbone=backbone,
        budget_minutes=float(budget_minutes),
        versions=versions(),
    )
    config = config_for(final, classes, image_size, recipe, seed)
    with atomic_output_dir(out) as folder:
        save_model(folder, final, config)
        if onnx:
            meta = {"classes": classes, "preprocessing": config["preprocessing"], "image_size": image_size}
            error = export_onnx(final, folder / "model.onnx", image_size, metadata=meta)
            log(f"model.onnx written (largest difference from PyTorch {error:.1e})")
        result.spent_seconds = time.perf_counter() - t_start
        write_report(folder, result, test_images=test.images)
    log(f"wrote {out} in {result.spent_seconds / 60:.1f} min (planned {result.planned_seconds / 60:.1f})")
    return result
