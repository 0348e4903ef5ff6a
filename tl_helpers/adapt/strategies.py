"""The course's decision, as functions: split, plan within a budget, probe, two-phase, fine-tune, decide.

The settings are the ones the notebooks measured on EuroSAT:

- **Probe** (notebook 02): logistic regression on the frozen backbone's pooled features, its ``C``
  chosen on validation from :data:`PROBE_CS`.
- **Two-phase** (notebook 05, the Keras guide's recipe; Kumar et al. 2022 call it LP-FT): phase 1 trains
  a head on the frozen backbone. The probe already *is* that head (a linear layer fitted on the frozen
  features), so phase 1 costs nothing extra: its weights are copied into the new classifier, and phase 2
  trains every layer with AdamW, the head at :data:`HEAD_LR` and the backbone at :data:`BACKBONE_LR` (inside
  notebook 05's good range, 1e-4 to 1e-3; its top, 1e-3, sits at the cliff edge), warm-up then cosine.
- **Fine-tune**: the same phase 2 (same rates, epochs, schedule, augmentation) from a *random* head, so
  the only difference between the two is the head's starting point.

The winner is chosen on validation: a strategy replaces the probe only when its paired 95 % interval
(bootstrap over the validation images) lies above zero; otherwise the probe is kept, because it is cheaper.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tl_helpers.adapt.result import Comparison, CurvePoint, StrategyResult
from tl_helpers.data import ImageTensors, make_loader, random_hflip
from tl_helpers.features import extract_features, fit_logistic_regression
from tl_helpers.models import get_head, get_preprocessing, keep_bn_statistics, layer_groups
from tl_helpers.train import fit, predict, warmup_cosine

__all__ = [
    "AUGMENTATIONS",
    "BACKBONE_LR",
    "BATCH_SIZE",
    "correct_on",
    "HEAD_LR",
    "MAX_EPOCHS",
    "MIN_EPOCHS",
    "PROBE_CS",
    "TARGET_STEPS",
    "Plan",
    "Throughput",
    "decide",
    "eval_loader",
    "features_of",
    "fine_tune",
    "label_curve",
    "make_plan",
    "measure_throughput",
    "paired_interval",
    "probe_head",
    "split_indices",
    "train_probe",
    "wilson_interval",
]

PROBE_CS: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
"""The probe's regularisation grid (inverse strength); the smallest ``C`` wins ties."""
HEAD_LR = 1e-3
"""Learning rate of the classifier during fine-tuning (notebook 05: a new head wants about 1e-3)."""
BACKBONE_LR = 3e-4
"""Learning rate of every pretrained layer during fine-tuning (inside 05's measured range)."""
BATCH_SIZE = 32
MIN_EPOCHS = 2
"""Fewer epochs than this do not count as fine-tuning: the plan keeps the probe instead."""
MAX_EPOCHS = 15
TARGET_STEPS = 300
"""Optimizer steps a fine-tuning run aims for (capped by MAX_EPOCHS and by the budget)."""
AUGMENTATIONS = ("flip", "flip-rot90", "none")
"""``flip``: random horizontal flips (photos have an up); ``flip-rot90``: also 90° rotations (top-down imagery)."""


# ----------------------------------------------------------------------------- split


def split_indices(
    labels: torch.Tensor | np.ndarray, seed: int, *, val_fraction: float = 0.2, test_fraction: float = 0.2
) -> dict[str, np.ndarray]:
    """A stratified, seeded split: per class, ``test_fraction`` to test, ``val_fraction`` to validation.

    Every class keeps at least one image in each part and at least one in training (a class needs 3
    images; the inspection asks for more). Exact duplicates were merged by the inspection, so no image
    can sit on both sides.

    Returns:
        ``{"train", "val", "test"}`` -> sorted indices into ``labels``.
    """
    labels = np.asarray(labels)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        if len(idx) < 3:
            raise ValueError(f"class {label} has {len(idx)} images; a split needs at least 3")
        order = np.random.default_rng([seed, int(label)]).permutation(idx)
        n_test = max(1, round(len(idx) * test_fraction))
        n_val = max(1, round(len(idx) * val_fraction))
        n_val = min(n_val, len(idx) - n_test - 1)
        parts["test"] += order[:n_test].tolist()
        parts["val"] += order[n_test : n_test + n_val].tolist()
        parts["train"] += order[n_test + n_val :].tolist()
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in parts.items()}


# ----------------------------------------------------------------------------- statistics


def paired_interval(
    correct: np.ndarray | list[bool], baseline: np.ndarray | list[bool], *, seed: int = 0, n_boot: int = 2000
) -> tuple[float, float, float]:
    """Accuracy difference (points) of two models on the same images, with a paired bootstrap 95 % interval."""
    a = np.asarray(correct, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("paired_interval needs two equally long, non-empty lists of per-image results")
    d = a - b
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    low, high = np.percentile(boots, [2.5, 97.5])
    return 100 * float(d.mean()), 100 * float(low), 100 * float(high)


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95 % interval of a proportion ``k / n`` (0..1)."""
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


# ----------------------------------------------------------------------------- planning


@dataclass
class Throughput:
    """Seconds per image on this machine, measured with the real model at the real size."""

    forward: float
    train: float


@torch.no_grad()
def _time_forward(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    model.eval()
    model(x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        model(x)
    return (time.perf_counter() - t0) / (repeats * len(x))


def measure_throughput(
    model: nn.Module, image_size: int, device: torch.device, *, batch_size: int = BATCH_SIZE
) -> Throughput:
    """Time a few forward passes and training steps (after a warm-up) of ``model``; restores its weights.

    BatchNorm is kept on its pretrained statistics (:func:`tl_helpers.models.keep_bn_statistics`), as in
    :func:`fine_tune`; the hooks stay on ``model``, which changes nothing in eval mode.
    """
    from tl_helpers.device import synchronize

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    keep_bn_statistics(model)  # as fine_tune trains (and harmless for features, which run in eval mode)
    model.to(device)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.zeros(batch_size, dtype=torch.long, device=device)
    forward = _time_forward(model, x, 2)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loss_fn = nn.CrossEntropyLoss()
    for i in range(4):
        if i == 1:
            synchronize(device)
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    synchronize(device)
    train = (time.perf_counter() - t0) / (3 * batch_size)
    model.load_state_dict(state)
    model.eval()
    return Throughput(forward=forward, train=train)


@dataclass
class Plan:
    """How the budget is spent, decided before training.

    Attributes:
        epochs: Epochs of each fine-tuning run (0: no fine-tuning fits).
        run_two_phase: Whether two-phase fine-tuning runs.
        run_fine_tune: Whether fine-tuning from a random head runs too (same epochs).
        seconds: Estimated seconds per phase.
        notes: Why something was left out.
    """

    epochs: int
    run_two_phase: bool
    run_fine_tune: bool
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def text(self) -> str:
        runs = ["probe"] + (["two-phase"] if self.run_two_phase else []) + (["fine-tune"] if self.run_fine_tune else [])
        line = f"plan: {', '.join(runs)}"
        if self.epochs:
            line += f" ({self.epochs} epochs each)"
        line += f"; about {_minutes(self.total)} on this machine"
        return "; ".join([line, *self.notes])


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def make_plan(
    n_train: int,
    n_val: int,
    n_test: int,
    throughput: Throughput,
    budget_seconds: float,
    *,
    spent: float = 0.0,
    epochs: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> Plan:
    """Size the runs to the budget from measured throughput.

    Fine-tuning aims for :data:`TARGET_STEPS` optimizer steps (between :data:`MIN_EPOCHS` and
    :data:`MAX_EPOCHS` epochs) and gets fewer epochs when the budget is short; below ``MIN_EPOCHS`` it is
    left out. Fine-tuning from a random head runs only if the budget also fits it at the same number of
    epochs, so the two fine-tuning runs differ in one thing. ``epochs`` fixes the number (reproducible runs).
    """
    features = (n_train + n_val) * throughput.forward
    probe = 2.0 + 0.002 * n_train * len(PROBE_CS)
    evaluate = (n_val + n_test) * throughput.forward
    per_epoch = max(1, n_train // batch_size) * batch_size * throughput.train
    left = budget_seconds - spent - features - probe - evaluate
    seconds = {"features": features, "probe": probe, "test": n_test * throughput.forward}
    notes: list[str] = []
    steps_per_epoch = max(1, n_train // batch_size)
    wanted = (
        epochs if epochs is not None else min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch)))
    )
    if epochs is None:
        fits_one = int(max(0.0, left) // (per_epoch + n_val * throughput.forward / MAX_EPOCHS))
        e = min(wanted, fits_one)
        if e < MIN_EPOCHS:
            need = spent + features + probe + evaluate + MIN_EPOCHS * per_epoch
            notes.append(f"no fine-tuning: {MIN_EPOCHS} epochs need about {_minutes(need)} in all")
            return Plan(0, False, False, seconds, notes)
        both = left >= 2 * e * per_epoch + n_val * throughput.forward
    else:
        e, both = epochs, True
    seconds["two-phase"] = e * per_epoch + n_val * throughput.forward
    if both:
        seconds["fine-tune"] = seconds["two-phase"]
    else:
        notes.append(f"fine-tuning from a random head left out: the budget fits one run of {e} epochs")
    if e < wanted:
        notes.append(f"{e} of {wanted} epochs fit the budget")
    return Plan(e, True, both, seconds, notes)


# ----------------------------------------------------------------------------- the strategies


def eval_loader(model: nn.Module, data: ImageTensors, image_size: int) -> Any:
    """Batches of ``data`` in order, preprocessed as ``model``'s weights expect (features, validation, test)."""
    pre = get_preprocessing(model)
    return make_loader(
        data, batch_size=64, mean=pre.mean, std=pre.std, image_size=image_size, interpolation=pre.interpolation
    )


def features_of(
    model: nn.Module,
    data: ImageTensors,
    image_size: int,
    device: torch.device,
    *,
    progress: bool = True,
    desc: str = "",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of the frozen backbone (eval mode), in the order of ``data``."""
    loader = eval_loader(model, data, image_size)
    return extract_features(model, loader, device, progress=progress, desc=desc or "features")


def train_probe(
    X_train: torch.Tensor,
    y_train: torch.Tensor,
    X_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    seed: int = 0,
    Cs: tuple[float, ...] = PROBE_CS,
) -> tuple[Any, float, dict[float, float], np.ndarray]:
    """Fit the probe for each ``C``, keep the best on validation (smallest ``C`` on ties).

    Returns:
        ``(classifier, C, {C: validation accuracy}, per-image correctness of the kept one on validation)``.
    """
    scores: dict[float, float] = {}
    best = None
    for C in Cs:
        clf = fit_logistic_regression(X_train, y_train, C=C, seed=seed)
        scores[C] = float(clf.score(np.asarray(X_val), np.asarray(y_val)))
        if best is None or scores[C] > scores[best[1]] + 1e-12:
            best = (clf, C)
    assert best is not None
    clf, C = best
    correct = clf.predict(np.asarray(X_val)) == np.asarray(y_val)
    return clf, C, scores, correct


def probe_head(clf: Any, in_features: int) -> nn.Linear:
    """The fitted scikit-learn probe (standardise, then logistic regression) as one ``nn.Linear``.

    ``W x' + b`` with ``x' = (x - mu) / sigma`` is ``(W / sigma) x + (b - W mu / sigma)``: the same logits,
    so the backbone with this head predicts exactly what the probe predicts.
    """
    scaler, lr = clf.steps[0][1], clf.steps[-1][1]
    W = np.asarray(lr.coef_, dtype=np.float64)
    b = np.asarray(lr.intercept_, dtype=np.float64)
    if W.shape[0] == 1:  # binary: scikit-learn keeps one row; softmax over (-z/2, z/2) gives the same probabilities
        W = np.vstack([-W / 2, W / 2])
        b = np.array([-b[0] / 2, b[0] / 2])
    mu = np.asarray(scaler.mean_, dtype=np.float64)
    sigma = np.asarray(scaler.scale_, dtype=np.float64)
    head = nn.Linear(in_features, W.shape[0])
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(W / sigma).float())
        head.bias.copy_(torch.from_numpy(b - (W / sigma) @ mu).float())
    return head


def _augment_fn(augment: str) -> Any:
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    return {"flip": random_hflip, "flip-rot90": True, "none": False}[augment]


def fine_tune(
    model: nn.Module,
    train: ImageTensors,
    val: ImageTensors,
    *,
    epochs: int,
    image_size: int,
    device: torch.device,
    seed: int = 0,
    augment: str = "flip",
    head_lr: float = HEAD_LR,
    backbone_lr: float = BACKBONE_LR,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
) -> tuple[np.ndarray, dict[str, Any], int]:
    """Train every layer of ``model`` (its head already in place), then score it on ``val``.

    AdamW, the head at ``head_lr`` and the rest at ``backbone_lr``, warm-up over the first epoch (at
    most a fifth of the steps) then cosine to zero. BatchNorm layers keep their pretrained statistics
    (inference mode, as the Keras guide prescribes; their scale and shift still learn): the probe's head
    was fitted on features normalised with those statistics, and some of its weights are large (features
    that barely vary get large weights after standardisation), so batch statistics would shake its logits.
    Seeded by ``seed``.

    Returns:
        ``(per-image correctness on val, settings, image passes)``.
    """
    pre = get_preprocessing(model)
    loader = make_loader(
        train,
        batch_size=min(batch_size, len(train)),
        mean=pre.mean,
        std=pre.std,
        image_size=image_size,
        interpolation=pre.interpolation,
        train=True,
        augment=_augment_fn(augment),
        seed=seed,
        device=device,
    )
    keep_bn_statistics(model)
    head = get_head(model)
    head_ids = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad_(True)
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW(
        [
            {"params": backbone, "lr": backbone_lr, "name": "backbone"},
            {"params": list(head.parameters()), "lr": head_lr, "name": "head"},
        ],
        fused=True,  # AdamW's update of every parameter in one kernel (CPU, CUDA and MPS)
    )
    steps = epochs * len(loader)
    warmup = min(len(loader), steps // 5)
    scheduler = warmup_cosine(optimizer, steps, warmup)
    fit(model, loader, None, optimizer, epochs=epochs, device=device, scheduler=scheduler, seed=seed, progress=progress)
    correct = correct_on(model, val, image_size, device)
    settings = {
        "epochs": epochs,
        "steps": steps,
        "batch_size": loader.batch_size,
        "head_lr": head_lr,
        "backbone_lr": backbone_lr,
        "warmup_steps": warmup,
        "schedule": "warm-up, then cosine to zero",
        "optimizer": "AdamW",
        "augment": augment,
        "batchnorm": "pretrained statistics (inference mode)",
        "groups": len(layer_groups(model)),
    }
    return correct, settings, 3 * steps * loader.batch_size  # a backward pass costs about two forward passes


def correct_on(model: nn.Module, data: ImageTensors, image_size: int, device: torch.device) -> np.ndarray:
    """One bool per image of ``data``: does ``model`` (in eval mode) predict its label?"""
    loader = eval_loader(model, data, image_size)
    preds, labels, _ = predict(model, loader, device)
    return (preds == labels).numpy()


# ----------------------------------------------------------------------------- decision and the label curve


def decide(strategies: list[StrategyResult], *, seed: int = 0) -> tuple[str, list[Comparison], str]:
    """Keep the probe unless a fine-tuning strategy beats it beyond the noise on validation.

    Returns:
        ``(chosen name, comparisons against the probe, the decision in words)``.
    """
    probe = next(s for s in strategies if s.name == "probe")
    comparisons = []
    for s in strategies:
        if s.name == "probe":
            continue
        diff, low, high = paired_interval(s.val_correct, probe.val_correct, seed=seed)
        comparisons.append(Comparison(s.name, "probe", diff, low, high))
    winners = [c for c in comparisons if c.low > 0]
    n_val = len(probe.val_correct)
    if not comparisons:
        return (
            "probe",
            comparisons,
            (
                f"Kept the probe ({100 * probe.val_accuracy:.1f} % on {n_val} validation images): "
                "fine-tuning did not fit the budget."
            ),
        )
    if not winners:
        parts = "; ".join(_comparison_text(c) for c in comparisons)
        return (
            "probe",
            comparisons,
            (
                f"Kept the probe ({100 * probe.val_accuracy:.1f} % on {n_val} validation images): "
                f"no fine-tuning beat it beyond the noise ({parts}), and it is the cheapest to train and to run."
            ),
        )
    best = max(winners, key=lambda c: (c.difference, c.name == "two-phase"))
    chosen = next(s for s in strategies if s.name == best.name)
    text = (
        f"Chose {best.name} ({100 * chosen.val_accuracy:.1f} % on {n_val} validation images): {_comparison_text(best)}."
    )
    others = [c for c in comparisons if c is not best]
    if others:
        text += " " + "; ".join(_comparison_text(c) for c in others) + "."
    return best.name, comparisons, text


def _comparison_text(c: Comparison) -> str:
    return f"{c.name} {c.difference:+.1f} points over the {c.baseline}, 95 % interval {c.low:+.1f} to {c.high:+.1f}"


def label_curve(
    X_train: torch.Tensor,
    y_train: torch.Tensor,
    X_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    C: float,
    seed: int = 0,
    fractions: tuple[float, ...] = (0.25, 0.5, 1.0),
) -> tuple[list[CurvePoint], str]:
    """The probe (at the chosen ``C``) on stratified fractions of the training part, scored on validation.

    Returns:
        The points and what they say: the gain from half to all of the training images, against the
        validation set's own noise (one standard error of the accuracy).
    """
    y = np.asarray(y_train)
    points = []
    for fraction in fractions:
        idx = []
        for label in np.unique(y):
            members = np.flatnonzero(y == label)
            k = max(1, round(len(members) * fraction))
            idx += np.random.default_rng([seed, int(label)]).permutation(members)[:k].tolist()
        idx = np.array(sorted(idx))
        if len(np.unique(y[idx])) < 2:
            continue
        clf = fit_logistic_regression(X_train[idx], y_train[idx], C=C, seed=seed)
        points.append(CurvePoint(fraction, len(idx), float(clf.score(np.asarray(X_val), np.asarray(y_val)))))
    if len(points) < 2:
        return points, "Too few images to draw a label curve."
    last, before = points[-1], points[-2]
    gain = 100 * (last.val_accuracy - before.val_accuracy)
    p = last.val_accuracy
    se = 100 * math.sqrt(max(p * (1 - p), 1e-4) / len(y_val))
    head = (
        f"From {before.n_train} to {last.n_train} training images the probe went from "
        f"{100 * before.val_accuracy:.1f} % to {100 * last.val_accuracy:.1f} % ({gain:+.1f} points; one standard "
        f"error of a validation accuracy here is about {se:.1f} points). "
    )
    if gain > 2 * se:
        return points, head + "The curve is still rising: more labelled images should help."
    if gain > se:
        return (
            points,
            head + "The curve is rising slowly: more labels may help a little; check the confused pairs first.",
        )
    return points, head + (
        "The curve is flat within the noise: more images of the same kind are unlikely to help the probe much; "
        "a better model (fine-tuning, a larger backbone) or cleaner labels are the next levers."
    )
