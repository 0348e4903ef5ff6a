"""Outcome checks of the capstone (exercises 06): a hand-written balanced split, a recipe chosen within a
training budget and graded on private images, and the learner's own error analysis.

The recipe check scores the learner's model on EuroSAT images *outside* the quick-check split
(:func:`tl_helpers.data.load_eurosat_heldout`), which the notebook never loads: tuning on the public
test set, or training on it, gains nothing there. Its thresholds come from measured baselines (see
:data:`BASELINES`). When the grader is given the instructor's own images (``grade --private-data``,
:mod:`tl_helpers.private_data`), it scores on those instead (:func:`graded_heldout`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from tl_helpers.checks.core import CheckResult, fail, learner_error, ok, preprocessing_of, register
from tl_helpers.checks.registry import exercise
from tl_helpers.data import BatchTransform, ImageTensors
from tl_helpers.train import evaluation_record, state_fingerprint, training_record

__all__ = [
    "BASELINES",
    "BUDGET_IMAGE_PASSES",
    "HELDOUT_PER_CLASS",
    "MAX_TRAIN_PER_CLASS",
    "PASS_ACCURACY",
    "confusion_of",
    "graded_heldout",
    "image_passes",
    "optimizer_steps",
    "parameter_updates",
    "predictions_of",
    "train_mode_batches",
]

BUDGET_IMAGE_PASSES = 3000
"""Training budget: images seen in training (epochs x training images), counted at 64 px.

A pass at ``s`` px costs ``(s / 64) ** 2`` of a 64 px pass. 3,000 passes of EfficientNet-Lite0 at 64 px
are about 40 s of fine-tuning on 2 CPU cores (head-only training: about a third of that).
"""
MAX_TRAIN_PER_CLASS = 100
HELDOUT_PER_CLASS = 50

BASELINES: dict[str, float] = {
    "head-only": 0.738,
    "fine-tune": 0.838,
}
"""Held-out accuracy of two recipes at the budget, measured with tl_helpers.train.fit on CPU, seed 0,
``data["train"].per_class(30)`` (300 images), batch 32, augmented, AdamW, 64 px, scored on
``load_eurosat_heldout(50)`` (500 private images): head only (backbone frozen, lr 1e-2, 5 epochs = 1,500
passes, 7 s unloaded): 73.8 % (10 epochs: 76.4 %); full fine-tuning (lr 1e-3, 5 epochs, 7 s): 83.8 %
(10 epochs: 83.0 %); fine-tuning at lr 1e-4 for 5 epochs: 55.6 %, for 10 epochs (the whole budget):
77.0 %; one rate of 1e-5 for head and backbone, 10 epochs: 16.6 % (a new head cannot learn at that rate in
100 steps; the Keras guide's 1e-5 is phase 2's rate, after the head was trained).
"""
PASS_ACCURACY = 0.60
"""Full marks from here: any sound recipe. Head-only and fine-tuning at the recommended learning rates clear
it; an untrained head (10 %), or a backbone wrecked by a far too high learning rate, does not."""

_STRATEGIES = ("probe", "head-only", "fine-tune")
_RECIPE_KEYS = ("strategy", "lr", "epochs", "batch_size", "image_size")

MEMORISED_GAP = 0.05
"""Test-set accuracy this far above the private held-out accuracy (and a test loss under
:data:`MEMORISED_LOSS_RATIO` of the held-out loss) means the model was trained on test images; measured
in docs/CHECKS.md (Notebook 06)."""
MEMORISED_LOSS_RATIO = 0.6


def predictions_of(
    model: nn.Module, data: ImageTensors, image_size: int = 64, train_mode: bool = False
) -> torch.Tensor:
    """Predicted labels of (a copy of) ``model`` on ``data``, with the model's own normalisation.

    Args:
        model: A classifier of normalised images.
        data: Pre-decoded images.
        image_size: Side length the images are resized to.
        train_mode: Run the copy in train mode (to recognise a learner's measurement in that mode).
    """
    pre = preprocessing_of(model)
    transform = BatchTransform(pre.mean, pre.std, int(image_size), pre.interpolation)
    net = copy.deepcopy(model).cpu().float()
    net.train(train_mode)
    out = []
    with torch.no_grad():
        for start in range(0, len(data), 100):
            out.append(net(transform.transform(data.images[start : start + 100])).argmax(1))
    return torch.cat(out)


def confusion_of(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> np.ndarray:
    """``C[true, predicted]`` counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix


def image_passes(epochs: int, num_images: int, image_size: int) -> float:
    """Cost of a training run in 64 px image passes (see :data:`BUDGET_IMAGE_PASSES`)."""
    return float(epochs) * num_images * (image_size / 64) ** 2


# ----------------------------------------------------------------------------- the balanced split


class _NoPerClass(ImageTensors):
    """A split whose ready-made ``per_class`` is off: the exercise is to write it."""

    def per_class(self, n: int, seed: int = 0) -> ImageTensors:
        raise RuntimeError("per_class() is switched off in this exercise: pick the indices of each class yourself")


def _fake_split(counts: tuple[int, ...]) -> _NoPerClass:
    labels = torch.cat([torch.full((c,), k, dtype=torch.int64) for k, c in enumerate(counts)])
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))
    labels = labels[order]
    images = torch.zeros(len(labels), 3, 4, 4, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(len(labels)) % 256  # image i knows its index
    images[:, 0, 0, 1] = torch.arange(len(labels)) // 256
    images[:, 1, 0, 0] = labels.to(torch.uint8)  # and its class
    classes = tuple(f"class{k}" for k in range(len(counts)))
    return _NoPerClass(images, labels, [f"img{i}.jpg" for i in range(len(labels))], classes)


def _looks_like_image_tensors(x: Any) -> bool:
    """Duck typing: images, labels and file names, whatever import made the class (the grader re-imports)."""
    return (
        isinstance(getattr(x, "images", None), torch.Tensor)
        and isinstance(getattr(x, "labels", None), torch.Tensor)
        and hasattr(x, "files")
        and len(x.files) == len(x.labels) == len(x.images)
    )


@register("balanced_split", 3, "a seeded subset with n images of every class, drawn by hand")
def _check_balanced_split(balanced_subset: Any) -> CheckResult:
    if not callable(balanced_subset):
        return fail("Pass your function balanced_subset(split, n, seed), not its result.", mistake="not_a_function")
    split = _fake_split((40, 12, 25, 60))
    before = split.images.clone()
    try:
        a = balanced_subset(split, 10, 0)
        b = balanced_subset(split, 10, 0)
        c = balanced_subset(split, 10, 1)
    except NotImplementedError:
        raise
    except RuntimeError as exc:
        if "per_class() is switched off" in str(exc):
            return fail(
                "You called .per_class(): here the point is to write it — pick n indices of each class yourself.",
                mistake="used_per_class",
            )
        return learner_error(exc, "balanced_subset")
    except Exception as exc:
        return learner_error(exc, "balanced_subset")
    if not torch.equal(split.images, before):
        return fail(
            "Your function changed the split it was given; build a new subset instead.", mistake="split_modified"
        )
    if not _looks_like_image_tensors(a):
        return fail(
            f"Return an ImageTensors (e.g. split.subset(indices)), not {type(a).__name__}.", mistake="not_image_tensors"
        )
    index = (a.images[:, 0, 0, 0].long() + 256 * a.images[:, 0, 0, 1].long()).tolist()
    if [a.files[i] for i in range(len(a))] != [f"img{i}.jpg" for i in index] or not torch.equal(
        a.labels, a.images[:, 1, 0, 0].long()
    ):
        return fail(
            "Images, labels and file names no longer line up: select all three with the same indices.",
            mistake="labels_misaligned",
        )
    if len(set(index)) < len(index):
        return fail(
            f"{len(index) - len(set(index))} image(s) drawn twice: draw without replacement.",
            mistake="with_replacement",
        )
    counts = torch.bincount(a.labels, minlength=4).tolist()
    if counts != [10, 10, 10, 10]:
        return fail(
            f"Not balanced: asking for 10 per class gave class counts {counts} on a split whose classes have "
            "40, 12, 25 and 60 images. Draw n indices *within each class*, not n x classes from the whole split.",
            mistake="not_balanced",
        )
    if a.files != b.files:
        return fail(
            "The same seed gave two different subsets: seed your generator (e.g. np.random.default_rng(seed)).",
            mistake="unseeded",
        )
    if a.files == c.files:
        firsts = [
            f"img{i}.jpg" for k in range(4) for i in sorted(torch.nonzero(split.labels == k).flatten().tolist())[:10]
        ]
        if sorted(a.files) == sorted(firsts):
            return fail(
                "Always the first n images of each class, whatever the seed: shuffle (with the seed) before "
                "taking n — file order is not random.",
                mistake="first_n_not_random",
            )
        return fail("Seeds 0 and 1 gave the same subset: the seed must drive the draw.", mistake="seed_ignored")
    return ok("n images of every class, without repeats, reproducible from the seed, labels aligned.")


# ----------------------------------------------------------------------------- the recipe, graded privately


def graded_heldout() -> ImageTensors:
    """The images ``recipe_outcome`` scores on: the instructor's (``TL_PRIVATE_DATA``), else the built-in ones."""
    from tl_helpers.data import load_eurosat_heldout
    from tl_helpers.private_data import active_private_data

    private = active_private_data()
    if private is not None and private.eurosat is not None:
        return private.eurosat
    return load_eurosat_heldout(HELDOUT_PER_CLASS)


def _recipe_problem(recipe: Any) -> tuple[str, str] | None:
    if not isinstance(recipe, Mapping):
        return (
            "Describe your choice in a dict: recipe = {'strategy': ..., 'lr': ..., 'epochs': ..., 'batch_size': ..., "
            "'image_size': ...}.",
            "recipe_not_a_dict",
        )
    missing = [k for k in _RECIPE_KEYS if k not in recipe]
    if missing:
        return f"recipe is missing {', '.join(missing)}.", "recipe_incomplete"
    if recipe["strategy"] not in _STRATEGIES:
        return (
            f"recipe['strategy'] must be one of {', '.join(_STRATEGIES)}, not {recipe['strategy']!r}.",
            "unknown_strategy",
        )
    try:
        if int(recipe["epochs"]) < 1 or int(recipe["batch_size"]) < 1:
            raise ValueError
    except (TypeError, ValueError):
        return "recipe['epochs'] and recipe['batch_size'] must be whole numbers of at least 1.", "recipe_incomplete"
    return None


def _epochs_of(history: Any) -> int | None:
    """Epochs recorded by ``history`` (a ``fit`` History or its dict), ``None`` when it records none."""
    if hasattr(history, "epochs"):
        return int(history.epochs)
    if isinstance(history, Mapping) and "train_loss" in history:
        return len(history["train_loss"])
    return None


def optimizer_steps(optimizer: Any) -> int | None:
    """The most steps any parameter of ``optimizer`` has taken (Adam/AdamW ``state['step']``), if it counts them."""
    steps = []
    for state in getattr(optimizer, "state", {}).values():
        step = state.get("step") if isinstance(state, Mapping) else None
        if step is not None:
            steps.append(int(step.item() if isinstance(step, torch.Tensor) else step))
    return max(steps) if steps else None


def _bumps_per_step(optimizer: Any, group: Mapping) -> int:
    """In-place writes one ``optimizer.step()`` makes to a parameter with these hyperparameters (0: unknown).

    Measured on a scratch parameter with an optimizer of the same class and the group's settings (AdamW:
    2, the decay and the update; Adam, SGD: 1; fused kernels bypass the counter: 0)."""
    dummy = nn.Parameter(torch.zeros(4))
    hyper = {k: v for k, v in group.items() if k != "params"}
    try:
        probe = type(optimizer)([{"params": [dummy], **hyper}])
        versions = []
        for _ in range(3):
            dummy.grad = torch.ones(4)
            probe.step()
            versions.append(dummy._version)
    except Exception:
        return 0
    return max(0, (versions[2] - versions[0]) // 2)


def parameter_updates(model: nn.Module, optimizer: Any) -> int | None:
    """How many optimizer steps the weights of ``model`` that ``optimizer`` trains really took, over *every*
    optimizer that ever trained them (a fresh optimizer's own counters start at 0; a tensor's version counter
    does not): the median over those weights of in-place writes divided by the writes per step.
    ``None`` when it cannot be told (no such weights, or an optimizer that bypasses the counter)."""
    own = {id(p) for p in model.parameters()}
    counts = []
    for group in getattr(optimizer, "param_groups", []):
        per_step = _bumps_per_step(optimizer, group)
        if per_step <= 0:
            continue
        counts += [p._version // per_step for p in group["params"] if id(p) in own and p.requires_grad]
    if not counts:
        return None
    return int(np.median(counts))


def train_mode_batches(model: nn.Module) -> int:
    """Batches the model's BatchNorm layers saw in train mode (``num_batches_tracked``; pretrained weights: 0)."""
    counts = [
        int(m.num_batches_tracked)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_batches_tracked is not None
    ]
    return max(counts, default=0)


def _drifting_frozen_bn(model: nn.Module) -> list[str]:
    """Frozen BatchNorm layers that ran on batch statistics during training (train mode or no running stats)."""
    names = []
    for name, m in model.named_modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        if any(p.requires_grad for p in m.parameters(recurse=False)):
            continue
        tracked = m.num_batches_tracked is not None and int(m.num_batches_tracked) > 0
        if tracked or not m.track_running_stats or m.running_mean is None:
            names.append(name)
    return names


def _fit_stats(model: nn.Module, data: Any, size: int) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of (a copy of) ``model`` in eval mode on ``data``."""
    pre = preprocessing_of(model)
    transform = BatchTransform(pre.mean, pre.std, int(size), pre.interpolation)
    net = copy.deepcopy(model).cpu().float().eval()
    logits = []
    with torch.no_grad():
        for start in range(0, len(data), 100):
            logits.append(net(transform.transform(data.images[start : start + 100])))
    out = torch.cat(logits)
    labels = torch.as_tensor(data.labels)
    return float((out.argmax(1) == labels).float().mean()), float(nn.functional.cross_entropy(out, labels))


@register("recipe_outcome", 4, "a recipe within the training budget, scored on private held-out images")
def _check_recipe_outcome(
    model: Any, recipe: Any, history: Any, train_data: Any, test_data: Any = None, optimizer: Any = None
) -> CheckResult:
    from tl_helpers.data import load_eurosat

    problem = _recipe_problem(recipe)
    if problem:
        return fail(*problem)
    if not isinstance(model, nn.Module):
        return fail(f"Pass your trained model (an nn.Module), not {type(model).__name__}.", mistake="not_a_model")
    size = int(recipe["image_size"])
    if size != 64:
        return fail(
            f"This exercise trains at 64 px (the accuracy check measures there); recipe says {size}.",
            mistake="wrong_image_size",
        )
    counts = torch.bincount(torch.as_tensor(train_data.labels), minlength=10)
    if int(counts.max()) > MAX_TRAIN_PER_CLASS:
        return fail(
            f"Over the budget: up to {MAX_TRAIN_PER_CLASS} training images per class, yours has {int(counts.max())}.",
            mistake="train_subset_too_large",
        )
    test_files = set(load_eurosat(("test",), progress=False)["test"].files)
    leaked = [f for f in train_data.files if f in test_files]
    if leaked:
        return fail(
            f"Test images used for training ({len(leaked)}, e.g. {leaked[0]}): the test set only measures. "
            "Train on images from data['train'].",
            mistake="trained_on_test_images",
        )
    record = training_record(model)  # what fit() itself noted on the model, whatever set was passed here
    fit_leaked = sorted(record["trained_on"] & test_files)
    if fit_leaked:
        return fail(
            f"fit trained your model on {len(fit_leaked)} test image(s) (e.g. {fit_leaked[0]}), although the "
            "training set passed here has none: the test set only measures. Train on images from data['train'] "
            "and pass the set you really trained on.",
            mistake="trained_on_test_images",
        )
    elsewhere = sorted(record["trained_on"] - set(train_data.files))
    if elsewhere:
        return fail(
            f"fit trained your model on {len(elsewhere)} image(s) that are not in the training set passed here "
            f"(e.g. {elsewhere[0]}): pass the set you really trained on, so the budget counts it.",
            mistake="trained_on_other_images",
        )
    if test_data is not None:
        final = state_fingerprint(model)
        others = {fp for fp in evaluation_record(test_data) if fp != final}
        if others:
            return fail(
                f"test_small was used to evaluate {len(others)} model(s) or training state(s) other than your "
                "final model (several learning rates compared on it, or test_small as fit's validation set). "
                "Choosing by test accuracy makes the test number optimistic: compare candidates on val_small and "
                "measure the test set once, at the end.",
                mistake="chose_on_test",
            )
    stated = int(recipe["epochs"])
    recorded = _epochs_of(history)
    if recorded is not None and recorded > stated:
        return fail(
            f"history records {recorded} epochs, your recipe states {stated}: the budget counts the epochs you "
            "really trained. Set recipe['epochs'] to what you pass to fit.",
            mistake="epochs_past_recipe",
        )
    cost = image_passes(stated, len(train_data), size)
    if cost > BUDGET_IMAGE_PASSES:
        return fail(
            f"Trained past the budget: {stated} epochs x {len(train_data)} images at {size} px = {cost:,.0f} image "
            f"passes, the budget is {BUDGET_IMAGE_PASSES:,} (fewer epochs, fewer images or smaller images).",
            mistake="over_budget",
        )
    # The work really done, from counters the training itself leaves behind (see docs/CHECKS.md, Budgets):
    # one optimizer step and one train-mode BatchNorm batch per batch of training data.
    batch = int(recipe["batch_size"])
    allowed = stated * -(-len(train_data) // batch)
    slack = max(2, allowed // 10)
    steps = optimizer_steps(optimizer)
    batches = train_mode_batches(model)
    why = (
        "a second call to fit, an extra training loop, or a training set larger than the one you passed here "
        "(the budget counts every image pass)"
    )
    if record["fit_calls"] > 1 and record["steps"] > allowed + slack:
        return fail(
            f"fit trained this model {record['fit_calls']} times ({record['steps']} optimizer steps in all); your "
            f"recipe ({stated} epochs of {len(train_data)} images in batches of {batch}) allows {allowed}. The budget "
            "counts every run, including the ones with a fresh optimizer: train once, with the epochs you state.",
            mistake="trained_twice",
        )
    updates = parameter_updates(model, optimizer)
    if updates is not None and updates > allowed + slack and (steps is None or updates > steps + slack):
        return fail(
            f"The weights your optimizer trains were updated about {updates} times, but this optimizer took "
            f"{steps if steps is not None else 'no counted'} steps and your recipe allows {allowed}: the model was "
            "trained before, by another optimizer (a second training run with a fresh optimizer). The budget counts "
            "every run: train once, with the epochs you state.",
            mistake="trained_with_another_optimizer",
        )
    if steps is not None and steps > allowed + slack:
        return fail(
            f"Your optimizer took {steps} steps; your recipe ({stated} epochs of {len(train_data)} images in "
            f"batches of {batch}) allows {allowed}. That is training past the budget: {why}.",
            mistake="extra_training_steps",
        )
    if batches > allowed + slack:
        return fail(
            f"Your model's BatchNorm layers saw {batches} batches in train mode; your recipe ({stated} epochs of "
            f"{len(train_data)} images in batches of {batch}) allows {allowed}. That is training past the budget: "
            f"{why}. (Measuring in train mode also counts: measure with model.eval().)",
            mistake="extra_training_passes",
        )
    if recipe["strategy"] in ("head-only", "probe"):
        drifting = _drifting_frozen_bn(model)
        if drifting:
            return fail(
                f"Frozen backbone, but {len(drifting)} of its BatchNorm layers (e.g. {drifting[0]!r}) ran on batch "
                "statistics during training: the head learned on features it never sees in eval mode. Keep the "
                "frozen BatchNorm layers in eval mode while training (call .eval() on them after model.train()).",
                mistake="head_only_bn_drift",
            )
    held = graded_heldout()
    acc = float((predictions_of(model, held, size) == held.labels).float().mean())
    if test_data is not None and hasattr(test_data, "images") and len(test_data):
        test_acc, test_loss = _fit_stats(model, test_data, size)
        held_acc, held_loss = _fit_stats(model, held, size)
        if test_acc - held_acc > MEMORISED_GAP and test_loss < MEMORISED_LOSS_RATIO * held_loss:
            return fail(
                f"Your model knows the test images: {test_acc:.1%} on test_small (loss {test_loss:.2f}) against "
                f"{held_acc:.1%} on {len(held)} private images of the same classes (loss {held_loss:.2f}). "
                "Test images were used for training (or to choose the model). Train on data['train'] only.",
                mistake="test_images_memorised",
            )
    baselines = ", ".join(f"{k} {v:.0%}" for k, v in BASELINES.items())
    if acc < PASS_ACCURACY:
        low = recipe.get("strategy") == "fine-tune" and isinstance(recipe.get("lr"), (int, float))
        if low and float(recipe["lr"]) < 5e-5:
            return fail(
                f"On {len(held)} private images your model scores {acc:.1%}: with one learning rate of "
                f"{recipe['lr']:g} for everything, the new, random head cannot learn in so few steps (measured: "
                "16.6 % at 1e-5). Low rates are for the pretrained backbone: give the head its own, larger rate "
                "(parameter groups) or train it first on the frozen backbone (two phases).",
                mistake="lr_too_low_for_new_head",
            )
        return fail(
            f"On {len(held)} private images your model scores {acc:.1%}, below the {PASS_ACCURACY:.0%} a sound "
            f"recipe reaches in this budget (measured: {baselines}). Check the learning rate for your strategy "
            "and that the model is trained (and its head sized for 10 classes).",
            mistake="below_private_bar",
        )
    return ok(
        f"{recipe['strategy']} at lr {recipe['lr']}, {cost:,.0f} of {BUDGET_IMAGE_PASSES:,} image passes: "
        f"{acc:.1%} on {len(held)} private images (measured baselines: {baselines})."
    )


# ----------------------------------------------------------------------------- error analysis


def _class_index(name: Any, classes: tuple[str, ...]) -> int:
    if isinstance(name, str):
        if name not in classes:
            raise ValueError(f"{name!r} is not a class name; the classes are {', '.join(classes)}")
        return classes.index(name)
    return int(name)


@register("confused_pair", 3, "the (true, predicted) class pair the learner's own model confuses most")
def _check_confused_pair(pair: Any, model: Any, test_data: Any, recipe: Any = None) -> CheckResult:
    classes = tuple(test_data.classes)
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        return fail("Give a pair: confused_pair = (true class name, predicted class name).", mistake="not_a_pair")
    try:
        a, b = (_class_index(x, classes) for x in pair)
    except ValueError as exc:
        return fail(str(exc), mistake="unknown_class")
    if a == b:
        return fail(
            f"({classes[a]}, {classes[b]}) is on the diagonal: those are correct predictions. Look only at "
            "off-diagonal cells (true != predicted).",
            mistake="diagonal_pair",
        )
    size = int(recipe["image_size"]) if isinstance(recipe, Mapping) and "image_size" in recipe else 64
    matrix = confusion_of(test_data.labels, predictions_of(model, test_data, size), len(classes))
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    top = int(errors.max())
    if top == 0:
        return fail(
            "Your model makes no mistakes on this test set: there is no confused pair to name.", mistake="no_errors"
        )
    if errors[a, b] == top:
        return ok(f"Yes: {errors[a, b]} {classes[a]} images are predicted as {classes[b]}, the largest confusion.")
    if errors[b, a] == top:
        return fail(
            f"Reversed: the order is (true class, predicted class). Your model calls {classes[a]} "
            f"{classes[b]} {errors[a, b]} times; the other way round is the big one.",
            mistake="pair_reversed",
        )
    train_errors = confusion_of(test_data.labels, predictions_of(model, test_data, size, train_mode=True), len(classes))
    np.fill_diagonal(train_errors, 0)
    if train_errors[a, b] == train_errors.max():
        return fail(
            "That is the top confusion of your model in *train mode* (BatchNorm on batch statistics): "
            "call model.eval() before predicting.",
            mistake="pair_from_train_mode",
        )
    if a == int(errors.sum(1).argmax()) and b == int(errors.sum(0).argmax()):
        return fail(
            f"{classes[a]} has the most errors and {classes[b]} is the most frequent wrong prediction, but "
            f"these two go together only {errors[a, b]} times: find the largest single off-diagonal cell.",
            mistake="pair_from_marginals",
        )
    return fail(
        f"Your model predicts {classes[b]} for {classes[a]} images {errors[a, b]} times; its most confused "
        f"pair has {top}. Compute the confusion matrix of *this* model (eval mode) on test_small.",
        mistake="not_the_top_pair",
    )


exercise(
    "balanced_split",
    "For every class separately, draw n of its images at random (without repeats), with a generator "
    "seeded by `seed`, and keep images, labels and file names together.",
    "`split.labels` holds one label per image; `np.flatnonzero(labels == c)` lists the positions of class c; "
    "`np.random.default_rng(seed).choice(..., replace=False)` draws; `split.subset(indices)` builds the result.",
    "rng = np.random.default_rng(seed)\n"
    "chosen = []\n"
    "for c in range(len(split.classes)):\n"
    "    where = ...  # positions of class c\n"
    "    chosen += list(rng.choice(where, size=n, replace=False))\n"
    "return split.subset(...)",
)
exercise(
    "recipe_outcome",
    "Pick the strategy that gets the most out of a small budget: the images are similar to ImageNet's in "
    "spirit, the training set is tiny. Compare candidates on the validation split, never on the test split.",
    f"Budget: epochs x training images x (image_size / 64)^2 <= {BUDGET_IMAGE_PASSES:,}. "
    "Head-only: freeze (requires_grad=False, BatchNorm in eval) and train the new head at a higher lr; "
    "fine-tuning: all layers with a small lr (AdamW, about 1e-4 to 1e-3). `train.fit` returns the history.",
    "recipe = {'strategy': 'fine-tune', 'lr': ..., 'epochs': ..., 'image_size': 64}\n"
    "optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe['lr'])\n"
    "history = fit(model, train_loader, val_loader, optimizer, epochs=recipe['epochs'], device=device)",
)
exercise(
    "confused_pair",
    "Count, for every true class, which class your model predicts for its test images; the largest count "
    "off the diagonal is the pair it confuses most, written (true class, predicted class).",
    "`train.predict` (or your own loop in eval mode) gives predictions and labels; `np.add.at` or "
    "`sklearn.metrics.confusion_matrix` counts them; `np.fill_diagonal(m, 0)` hides correct predictions.",
    "m = confusion_matrix(y_true, y_pred)\n"
    "np.fill_diagonal(m, 0)\n"
    "t, p = np.unravel_index(m.argmax(), m.shape)\n"
    "confused_pair = (classes[...], classes[...])",
)


exercise(
    "honest_accuracy",
    "The number to report is the trained model's accuracy on the test images, measured with the model in "
    "inference mode (BatchNorm's stored statistics, no dropout), as a fraction.",
    "test_loader holds test_small, normalised like the training data; train.evaluate(model, loader, device) "
    "switches to eval mode and returns a result with an .accuracy, or write the loop of exercise 04.",
    "test_acc = <evaluate the model on test_loader>.<its accuracy>",
    check="accuracy",
)
