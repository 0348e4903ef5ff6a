"""Checks of heads and evaluation: a new head that fits, accuracy measured in eval mode on the test split."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from tl_helpers.checks.core import (
    CheckResult,
    accuracy_on,
    fail,
    head_parameter_ids,
    ok,
    probe_images,
    register,
)
from tl_helpers.checks.splits import check_split_leakage

__all__: list[str] = []  # checks register themselves in CHECKS; nothing else is public


@register("replace_head", 2, "a new 10-class head that fits the backbone's features")
def _check_replace_head(model: Any, num_classes: int = 10) -> CheckResult:
    if not isinstance(model, nn.Module):
        return fail(f"Expected an nn.Module, got {type(model).__name__}.")
    net = copy.deepcopy(model).cpu().float().eval()
    try:
        with torch.no_grad():
            out = net(probe_images(2))
    except RuntimeError as exc:
        if "shape" in str(exc) or "size" in str(exc):
            import re

            sizes = re.search(r"(\d+)x(\d+) and (\d+)x(\d+)", str(exc))
            want = f" ({sizes.group(2)}, but the head expects {sizes.group(3)})" if sizes else ""
            return fail(
                f"The new head's in_features does not match the number of features the backbone "
                f"produces{want}: {exc}. Read it from the old head (old.in_features) or model.num_features."
            )
        raise
    if out.ndim != 2:
        return fail(f"Expected logits N x {num_classes}, got shape {tuple(out.shape)}.")
    if out.shape[1] == 1000:
        return fail(
            "Still 1000 outputs: the ImageNet head is still there. Replace it with "
            f"nn.Linear(in_features, {num_classes})."
        )
    if out.shape[1] != num_classes:
        return fail(f"The head has {out.shape[1]} outputs; EuroSAT has {num_classes} classes.")
    head_ids = head_parameter_ids(net)
    if head_ids and not any(p.requires_grad for p in net.parameters() if id(p) in head_ids):
        return fail("The new head is frozen (requires_grad=False): it could never learn.")
    return ok(f"The model outputs {num_classes} logits per image.")


def _mode_probe() -> tuple[nn.Module, torch.utils.data.DataLoader]:
    """A tiny conv net whose predictions differ in train and eval mode (BN statistics far from the batch's)."""
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        net[1].running_mean.fill_(2.0)
        net[1].running_var.fill_(9.0)
    net.eval()
    x = torch.randn(64, 3, 8, 8, generator=g)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[:16] = (y[:16] + 1) % 4  # eval accuracy exactly 0.75
    net.train()  # the learner's function must switch to eval itself
    dataset = torch.utils.data.TensorDataset(x, y)
    return net, torch.utils.data.DataLoader(dataset, batch_size=16, shuffle=False)


@register("evaluate_mode", 3, "accuracy measured in eval mode, without changing the model")
def _check_evaluate_mode(evaluate_accuracy: Any) -> CheckResult:
    if not callable(evaluate_accuracy):
        return fail("Pass your evaluate_accuracy function itself.")
    net, loader = _mode_probe()
    bn = net[1]
    before = bn.running_mean.clone()
    torch.manual_seed(0)
    value = float(evaluate_accuracy(net, loader, torch.device("cpu")))
    moved = not torch.equal(bn.running_mean, before)
    if abs(value - 0.75) < 1e-6:
        return ok("Accuracy measured in eval mode (BatchNorm uses its running statistics, Dropout is off).")
    if abs(value - 75.0) < 1e-4:
        return fail("Return a fraction between 0 and 1, not a percentage.")
    if moved:
        return fail(
            "Evaluation ran in train mode: BatchNorm used batch statistics (and even updated its running "
            "statistics) and Dropout dropped units, so the accuracy is wrong. Call model.eval() "
            "before evaluating (and use torch.no_grad())."
        )
    return fail(
        f"On a probe model with accuracy 0.75 in eval mode your function returned {value:.3f}. Count "
        "correct predictions (logits.argmax(1) == y) over the whole loader and divide by the number "
        "of samples, in eval mode."
    )


@register("accuracy", 3, "test accuracy recomputed on the test split, in eval mode")
def _check_accuracy(acc: Any, model: Any, train_data: Any, test_data: Any) -> CheckResult:
    leak = check_split_leakage(train_data, test_data)
    if not leak.passed:
        return leak
    acc = float(acc)
    if len(test_data) > 2000:
        return fail("Use a test subset of at most 2,000 images here (e.g. data['test'].per_class(30)).")
    true = accuracy_on(model, test_data)
    tol = max(0.006, 1.5 / len(test_data))
    if acc > 1.0 and abs(acc / 100 - true) <= tol:
        return fail("Report accuracy as a fraction between 0 and 1, not a percentage.")
    if abs(acc - true) <= tol:
        if true < 0.3:
            return fail(f"Test accuracy {true:.1%} is barely above chance (10%): did the model train?")
        return ok(f"Test accuracy {true:.1%}, measured on the test split in eval mode.")
    if getattr(model, "training", False):
        return fail(
            f"Evaluation ran in train mode (model.training is True): BatchNorm used batch statistics and "
            f"Dropout was on. Call model.eval() before measuring; in eval mode the test accuracy is "
            f"{true:.1%}."
        )
    train_acc = accuracy_on(model, train_data, limit=2000)
    if abs(acc - train_acc) <= tol and abs(train_acc - true) > tol:
        return fail(
            f"Accuracy computed on the wrong split: {acc:.1%} matches the training images "
            f"({train_acc:.1%}); on the test images it is {true:.1%}."
        )
    return fail(
        f"Your accuracy {acc:.1%} does not match the model's test accuracy {true:.1%} (eval mode, the "
        "model's own normalisation)."
    )
