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
    learner_error,
    ok,
    probe_images,
    register,
)
from tl_helpers.checks.registry import exercise
from tl_helpers.checks.splits import check_split_leakage

__all__ = ["PROBE_BATCH", "accuracy_floor"]


def _unused_new_layer(net: nn.Module, x: torch.Tensor, num_classes: int) -> str | None:
    """The name of a ``Linear(..., num_classes)`` that forward() never calls (a head set under the wrong name)."""
    called: set[int] = set()
    handles = [
        m.register_forward_hook(lambda mod, _i, _o: called.add(id(mod)))
        for m in net.modules()
        if isinstance(m, nn.Linear)
    ]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear) and m.out_features == num_classes and id(m) not in called:
            return name
    return None


@register("replace_head", 2, "a new 10-class head that fits the backbone's features")
def _check_replace_head(model: Any, num_classes: int = 10) -> CheckResult:
    if not isinstance(model, nn.Module):
        return fail(f"Expected an nn.Module, got {type(model).__name__}.", mistake="not_a_module")
    net = copy.deepcopy(model).cpu().float().eval()
    x = probe_images(2)
    try:
        with torch.no_grad():
            out = net(x)
    except RuntimeError as exc:
        if "shape" in str(exc) or "size" in str(exc):
            import re

            sizes = re.search(r"(\d+)x(\d+) and (\d+)x(\d+)", str(exc))
            want = f" ({sizes.group(2)}, but the head expects {sizes.group(3)})" if sizes else ""
            return fail(
                f"The new head's in_features does not match the number of features the backbone "
                f"produces{want}: {exc}. Read it from the old head (old.in_features) or model.num_features.",
                mistake="head_in_features_wrong",
            )
        return learner_error(exc, "model")
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return fail(f"Expected logits N x {num_classes}, got {shape}.", mistake="output_not_logits")
    stale = [n for n, m in net.named_modules() if isinstance(m, nn.Linear) and m.out_features != m.weight.shape[0]]
    if stale:
        return fail(
            f"`{stale[0]}.out_features` was changed, but that attribute only describes the layer: its weight "
            f"still has {net.get_submodule(stale[0]).weight.shape[0]} rows. Create a new layer instead: "
            f"nn.Linear(in_features, {num_classes}).",
            mistake="out_features_attribute_changed",
        )
    if out.shape[1] != num_classes:
        unused = _unused_new_layer(net, x, num_classes)
        if unused:
            return fail(
                f"Your new {num_classes}-class layer `{unused}` is never used: forward() does not call a "
                f"module of that name, so the old head still produces {out.shape[1]} outputs. Assign the "
                "new layer to the attribute that holds this architecture's head (EfficientNet: "
                "classifier, ResNet: fc; print(model) shows it).",
                mistake="head_not_attached",
            )
    if out.shape[1] == 1000:
        return fail(
            "Still 1000 outputs: the ImageNet head is still there. Replace it with "
            f"nn.Linear(in_features, {num_classes}).",
            mistake="imagenet_head_kept",
        )
    if out.shape[1] != num_classes:
        return fail(
            f"The head has {out.shape[1]} outputs; EuroSAT has {num_classes} classes.", mistake="wrong_num_classes"
        )
    sums = out.sum(1)
    if bool((out >= 0).all()) and torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        return fail(
            "The model outputs probabilities (each row sums to 1): your head ends in a softmax. "
            "nn.CrossEntropyLoss applies log-softmax itself and expects raw scores (logits); leave the "
            "softmax out of the model.",
            mistake="head_softmax",
        )
    from tl_helpers.models import get_head

    try:
        last = [m for m in get_head(net).modules() if isinstance(m, nn.Linear)]
    except ValueError:
        last = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if last and last[-1].bias is None:
        return fail(
            "The new head has no bias (bias=False): each class's score can no longer be shifted on its own, "
            "as the ImageNet head's could. Create it with nn.Linear(in_features, num_classes) (bias on by default).",
            mistake="head_without_bias",
        )
    head_ids = head_parameter_ids(net)
    if head_ids and not any(p.requires_grad for p in net.parameters() if id(p) in head_ids):
        return fail("The new head is frozen (requires_grad=False): it could never learn.", mistake="head_frozen")
    return ok(f"The model outputs {num_classes} logits per image.")


PROBE_BATCH = 24  # 64 probe samples in batches of 24, 24 and 16: per-batch averages and full-batch sizes go wrong


def _mode_probe(start_in_train_mode: bool = True) -> tuple[nn.Module, torch.utils.data.DataLoader]:
    """A tiny conv net whose predictions differ in train and eval mode (BN statistics far from the batch's).

    In eval mode it gets exactly 48 of the 64 samples right (0.75); the 16 wrong ones are the first
    16, so the first batch scores 8/24 and the other two 1.0.
    """
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
    net.train(start_in_train_mode)  # the learner's function must switch to eval itself
    dataset = torch.utils.data.TensorDataset(x, y)
    return net, torch.utils.data.DataLoader(dataset, batch_size=PROBE_BATCH, shuffle=False)


def _close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-4


@register("evaluate_mode", 3, "accuracy measured in eval mode, without gradients, without changing the model")
def _check_evaluate_mode(evaluate_accuracy: Any) -> CheckResult:
    if not callable(evaluate_accuracy):
        return fail("Pass your evaluate_accuracy function itself.", mistake="not_a_function")
    net, loader = _mode_probe()
    bn = net[1]
    before = bn.running_mean.clone()
    grad_enabled: list[bool] = []
    net.register_forward_hook(lambda _m, _i, _o: grad_enabled.append(torch.is_grad_enabled()))
    torch.manual_seed(0)
    try:
        value = float(evaluate_accuracy(net, loader, torch.device("cpu")))
    except NotImplementedError:
        raise  # not done yet: run_check says so
    except Exception as exc:
        return learner_error(exc, "evaluate_accuracy")
    moved = not torch.equal(bn.running_mean, before)
    batches = len(loader)
    if moved:
        return fail(
            "Evaluation ran in train mode: BatchNorm used batch statistics (and even updated its running "
            "statistics) and Dropout dropped units, so the accuracy is wrong. Call model.eval() "
            "before evaluating (and use torch.no_grad()).",
            mistake="eval_train_mode",
        )
    if _close(value, 75.0):
        return fail("Return a fraction between 0 and 1, not a percentage.", mistake="accuracy_percentage")
    if _close(value, (8 / 24 + 1 + 1) / 3):
        return fail(
            f"You averaged the per-batch accuracies ({value:.3f}), but the last batch is smaller, so "
            "batches do not weigh the same. Add up the correct predictions and the number of samples "
            "over all batches, and divide once at the end.",
            mistake="mean_of_batch_accuracies",
        )
    if _close(value, 48 / batches):
        return fail(
            "You divided by the number of batches (len(loader)); divide by the number of samples.",
            mistake="divided_by_batches",
        )
    if _close(value, 48 / (PROBE_BATCH * batches)):
        return fail(
            "You divided by batch_size x len(loader), which assumes every batch is full; the last one "
            "usually is not. Count the samples: total += len(y).",
            mistake="full_batches_assumed",
        )
    if _close(value, 1.0):
        return fail(
            "That is the accuracy of the last batch only: accumulate correct and total across the loop "
            "(initialise them before it, not inside).",
            mistake="last_batch_only",
        )
    if not _close(value, 0.75):
        return fail(
            f"On a probe model with accuracy 0.75 in eval mode your function returned {value:.3f}. Count "
            "correct predictions (logits.argmax(1) == y) over the whole loader and divide by the number "
            "of samples, in eval mode.",
            mistake="accuracy_wrong",
        )
    if grad_enabled and any(grad_enabled):
        return fail(
            "The accuracy is right, but the forward passes ran with gradients enabled: autograd kept every "
            "activation for a backward pass that never comes (memory and time). Wrap the loop in "
            "`with torch.no_grad():`.",
            mistake="no_no_grad",
        )
    net, loader = _mode_probe(start_in_train_mode=False)  # a model found in eval mode must stay there
    try:
        evaluate_accuracy(net, loader, torch.device("cpu"))
    except Exception as exc:  # pragma: no cover - it ran once already
        return learner_error(exc, "evaluate_accuracy")
    if net.training:
        return fail(
            "The accuracy is right, but your function leaves a model that was in eval mode in train mode "
            "(it calls model.train() at the end). Restore the mode you found: was_training = "
            "model.training at the start, model.train(was_training) at the end (or simply leave it in eval mode).",
            mistake="mode_not_restored",
        )
    return ok(
        "Accuracy measured in eval mode (BatchNorm uses its running statistics, Dropout is off), without gradients."
    )


def accuracy_floor(n: int, num_classes: int) -> float:
    """Lowest accuracy that is clearly above chance on ``n`` test images of ``num_classes`` balanced classes.

    Chance plus four standard errors of a guessing model, and at least 1.5 x chance: on 300 EuroSAT
    images that is 17%. A real but short fine-tuning (lr=1e-4, two epochs: about 29%) passes; an untrained
    head or an optimizer that trains nothing (about 10%) does not.
    """
    chance = 1.0 / max(num_classes, 2)
    noise = 4 * (chance * (1 - chance) / max(n, 1)) ** 0.5
    return min(max(chance + noise, 1.5 * chance), 0.5)


def _last_batch_accuracies(model: nn.Module, data: Any) -> dict[int, float]:
    """Accuracy (eval mode) of the last batch of an unshuffled loader over ``data``, for common batch sizes."""
    from tl_helpers.checks.core import preprocessing_of
    from tl_helpers.data import BatchTransform

    pre = preprocessing_of(model)
    transform = BatchTransform(pre.mean, pre.std, int(data.images.shape[-1]), pre.interpolation)
    net = copy.deepcopy(model).cpu().float().eval()
    out = {}
    n = len(data)
    for batch in (16, 32, 50, 64, 100, 128, 256):
        if batch >= n:
            continue
        start = ((n - 1) // batch) * batch
        with torch.no_grad():
            predicted = net(transform.transform(data.images[start:])).argmax(1)
        out[batch] = float((predicted == data.labels[start:]).float().mean())
    return out


@register("accuracy", 3, "test accuracy recomputed on the test split, in eval mode")
def _check_accuracy(acc: Any, model: Any, train_data: Any, test_data: Any) -> CheckResult:
    leak = check_split_leakage(train_data, test_data)
    if not leak.passed:
        return leak
    if isinstance(acc, bool):
        return fail("Report the accuracy as a number (a fraction), not True/False.", mistake="accuracy_not_a_number")
    try:
        acc = float(acc)
    except (TypeError, ValueError):
        what = type(acc).__name__
        extra = " (evaluate(...) returns a result: take its .accuracy)" if hasattr(acc, "accuracy") else ""
        return fail(
            f"Report the accuracy as one number, a fraction, not a {what}{extra}.", mistake="accuracy_not_a_number"
        )
    if acc != acc:  # NaN
        return fail("Your accuracy is NaN: did the loop count any images?", mistake="accuracy_not_a_number")
    if len(test_data) > 2000:
        return fail(
            "Use a test subset of at most 2,000 images here (e.g. data['test'].per_class(30)).",
            mistake="test_subset_too_large",
        )
    true = accuracy_on(model, test_data)
    n = min(len(test_data), 2000)
    tol = max(0.006, 1.5 / n)
    if acc > 1.0 and abs(acc / 100 - true) <= tol:
        return fail("Report accuracy as a fraction between 0 and 1, not a percentage.", mistake="accuracy_percentage")
    if acc > 1.0 and abs(acc - true * n) <= 1.5:
        return fail(
            f"{acc:g} is the number of correct predictions: divide by the number of test images ({n}) to report "
            "a fraction.",
            mistake="accuracy_not_a_fraction",
        )
    if abs(acc - true) <= tol:
        num_classes = len(set(test_data.labels.tolist())) if hasattr(test_data, "labels") else 10
        floor = accuracy_floor(len(test_data), num_classes)
        if true < floor:
            return fail(
                f"Test accuracy {true:.1%} is barely above chance ({1 / num_classes:.0%}; anything under "
                f"{floor:.0%} on {len(test_data)} images could be guessing): did the model train? (An "
                "optimizer without the model's trainable parameters, or a head that was never trained, "
                "gives this.)",
                mistake="accuracy_near_chance",
            )
        return ok(f"Test accuracy {true:.1%}, measured on the test split in eval mode.")
    if acc < 0.0 or acc > 1.0:
        return fail(
            f"{acc:g} is not an accuracy: report the fraction of test images predicted correctly (0 to 1).",
            mistake="accuracy_not_a_fraction",
        )
    # The split first: evaluate() restores the mode it found, so a model left in train mode says
    # nothing about how the number was measured.
    train_acc = accuracy_on(model, train_data, limit=1000)
    # an augmented training loader (random flips) moves the number a little off the clean training accuracy
    near_train = abs(acc - train_acc) <= max(tol, 0.03) and abs(acc - train_acc) < abs(acc - true)
    if near_train and abs(train_acc - true) > tol:
        return fail(
            f"Accuracy computed on the wrong split: {acc:.1%} matches the training images "
            f"({train_acc:.1%} in eval mode); on the test images it is {true:.1%}. Measure on the test "
            "loader (test_small), not on the images the model was trained on.",
            mistake="accuracy_on_training_data",
        )
    torch.manual_seed(0)
    train_mode_acc = accuracy_on(model, test_data, train_mode=True)
    train_mode_tol = max(3 * tol, 0.03)
    if abs(acc - train_mode_acc) <= train_mode_tol and abs(train_mode_acc - true) > train_mode_tol:
        return fail(
            f"Evaluation ran in train mode: your {acc:.1%} matches the model measured in train mode "
            f"({train_mode_acc:.1%}), where BatchNorm uses batch statistics and Dropout is on. Call "
            f"model.eval() before measuring; in eval mode the test accuracy is {true:.1%}.",
            mistake="accuracy_train_mode",
        )
    if abs((1.0 - acc) - true) <= tol and abs(acc - true) > tol:
        return fail(
            f"{acc:.1%} is the error rate: the model's test accuracy is {1 - acc:.1%}. Count the correct "
            "predictions (predicted == label), not the wrong ones.",
            mistake="accuracy_error_rate",
        )
    last = [b for b, value in _last_batch_accuracies(model, test_data).items() if abs(value - acc) <= 1e-6]
    if last:
        return fail(
            f"{acc:.1%} is the accuracy of the last batch only (of {last[0]} images, say): accumulate correct "
            f"predictions and counts over all batches; on all {len(test_data)} test images it is {true:.1%}.",
            mistake="accuracy_last_batch_only",
        )
    if getattr(model, "training", False):
        return fail(
            f"Your accuracy {acc:.1%} does not match the model's test accuracy in eval mode ({true:.1%}), "
            "and the model is still in train mode: evaluation probably ran in train mode, where BatchNorm "
            "uses batch statistics and Dropout is on. Call model.eval() before measuring.",
            mistake="accuracy_train_mode",
        )
    return fail(
        f"Your accuracy {acc:.1%} does not match the model's test accuracy {true:.1%} (eval mode, the "
        "model's own normalisation). Measure this model, after training, on the test split (not the validation "
        "or training split), with the same normalisation as in training.",
        mistake="accuracy_mismatch",
    )


# ----------------------------------------------------------------------------- hints (exercises of 04)

exercise(
    "replace_head",
    "The last layer maps the backbone's features to 1000 ImageNet classes. Put a fresh layer in its "
    "place with one output per EuroSAT class, taking as many inputs as the old layer did.",
    "print(model) shows the head's attribute name at the end (EfficientNet: classifier); an nn.Linear "
    "knows its sizes as .in_features and .out_features. Changing .out_features does not resize a layer.",
    "old = model.<head attribute>\nmodel.<head attribute> = nn.Linear(old.<number of inputs>, <number of classes>)",
)
exercise(
    "replace_head_resnet",
    "Same job, another architecture: its head has another name and another number of input features.",
    "print(resnet) ends with its head; read its size from the layer itself instead of copying a "
    "number from EfficientNet.",
    "resnet.<head attribute> = nn.Linear(resnet.<head attribute>.<number of inputs>, ...)",
    check="replace_head",
)
exercise(
    "evaluate_mode",
    "Accuracy = correct predictions / number of samples, over the whole loader, with Dropout off and "
    "BatchNorm using its stored statistics, and without building a graph for gradients.",
    "model.eval() switches Dropout/BatchNorm to evaluation; `with torch.no_grad():` turns autograd "
    "off; logits.argmax(1) is the predicted class; len(y) is a batch's size (the last batch can be smaller).",
    "model.eval()\ncorrect = total = 0\nwith torch.no_grad():\n    for x, y in loader:\n"
    "        ...  # predictions for x on device; add to correct and total\nreturn ...",
)
