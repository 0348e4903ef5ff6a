"""Self-check exercises: ``check("freeze_backbone", model)`` gives immediate, specific feedback.

Checks test *behaviour*, not one exact answer: they look at what the learner's
objects do (which parameters require gradients, whether BatchNorm statistics
move in train mode, what a model outputs for a small batch, which parameters an
optimizer holds...), so any correct solution passes and each common mistake gets
a targeted hint. Every check works on copies and tiny inputs (a few 64 px images),
runs in well under a few seconds on a CPU, and never modifies the learner's objects.

``ASSIGNMENTS`` lists, per exercise notebook, the graded checks and the notebook
variables each one is applied to; the batch grader (:mod:`tl_helpers.grading`)
re-runs exactly these checks on the objects a submission produced.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

__all__ = ["CHECKS", "ASSIGNMENTS", "Check", "CheckResult", "check", "run_check", "total_points"]


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    feedback: str

    def __repr__(self) -> str:  # short: the message was already printed by check()
        return f"<{'passed' if self.passed else 'failed'}>"


@dataclass(frozen=True)
class Check:
    id: str
    points: int
    description: str
    function: Callable[..., CheckResult] = field(repr=False)


CHECKS: dict[str, Check] = {}


def _register(id: str, points: int, description: str):
    def wrap(function: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
        CHECKS[id] = Check(id, points, description, function)
        return function

    return wrap


def ok(message: str) -> CheckResult:
    return CheckResult(True, message)


def fail(message: str) -> CheckResult:
    return CheckResult(False, message)


def run_check(id: str, *objects: Any) -> CheckResult:
    """Run one check and return its result (a crash inside the check is a failed result, not an exception)."""
    if id not in CHECKS:
        raise KeyError(f"Unknown check {id!r}. Known checks: {', '.join(sorted(CHECKS))}")
    try:
        result = CHECKS[id].function(*objects)
    except NotImplementedError:
        return fail("Not done yet: the exercise cell still raises NotImplementedError.")
    except Exception as exc:  # a wrong object type, a model that cannot run...
        return fail(f"The check could not use your objects: {type(exc).__name__}: {exc}")
    if not isinstance(result, CheckResult):  # pragma: no cover - our own bug
        return fail(f"internal error in check {id!r}")
    return result


def check(id: str, *objects: Any) -> CheckResult:
    """Check an exercise and print ✅ or ❌ with a specific hint. Never raises on a wrong answer.

    Raises:
        KeyError: ``id`` is not a known check (a typo in the notebook).
    """
    result = run_check(id, *objects)
    points = CHECKS[id].points
    mark = "✅" if result.passed else "❌"
    print(f"{mark} {id} ({points if result.passed else 0}/{points} points): {result.feedback}")
    return result


def total_points(assignment: str) -> int:
    """The points an assignment is worth (the sum over its graded checks)."""
    return sum(CHECKS[cid].points for _, cid, _ in ASSIGNMENTS[assignment])


# ----------------------------------------------------------------------------- helpers


def _head_parameter_ids(model: nn.Module) -> set[int]:
    """ids of the parameters of the classification head (timm's ``get_classifier()`` or the last Linear)."""
    from tl_helpers.models import get_head

    ids: set[int] = set()
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        if isinstance(head, nn.Module):
            ids |= {id(p) for p in head.parameters()}
    try:
        ids |= {id(p) for p in get_head(model).parameters()}
    except ValueError:
        pass
    if not ids:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if linears:
            ids = {id(p) for p in linears[-1].parameters()}
    return ids


def _optimizer_param_ids(optimizer: Any) -> list[int]:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"expected a torch.optim optimizer, got {type(optimizer).__name__}")
    return [id(p) for group in optimizer.param_groups for p in group["params"]]


def _batchnorms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _probe_images(n: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def _preprocessing(model: Any):
    from tl_helpers.models import get_preprocessing

    if isinstance(model, str):
        return get_preprocessing(model)
    try:
        return get_preprocessing(model)
    except Exception:
        return get_preprocessing("efficientnet_lite0")


def _files(data: Any) -> list[str]:
    if hasattr(data, "files"):
        return list(data.files)
    if isinstance(data, (list, tuple)):
        return [x[0] if isinstance(x, (list, tuple)) else str(x) for x in data]
    raise TypeError(f"expected ImageTensors or a list of file names, got {type(data).__name__}")


def _fmt(x: float) -> str:
    return f"{x:.3g}"


# ----------------------------------------------------------------------------- data and preprocessing


@_register("normalisation", 2, "inputs scaled to [0, 1] and normalised with the pretrained model's mean/std")
def _check_normalisation(transform: Any, model: Any = "efficientnet_lite0") -> CheckResult:
    pre = _preprocessing(model)
    fn = transform
    if isinstance(transform, torch.utils.data.DataLoader):
        fn = getattr(transform.collate_fn, "transform", None)
        if fn is None:
            return fail("This loader has no normalising transform; build it with data.make_loader(..., mean=, std=).")
    if not callable(fn):
        return fail("Pass your normalising function (uint8 images -> float tensor) or your DataLoader.")
    # constant images survive any resizing, so this works at any output size
    values = torch.tensor([0, 128, 255], dtype=torch.uint8)
    images = values.view(3, 1, 1, 1).expand(3, 3, 64, 64).contiguous()
    out = fn(images.clone())
    out = torch.as_tensor(out).float()
    if out.ndim != 4 or out.shape[0] != 3 or out.shape[1] != 3:
        return fail(f"Expected a batch N x 3 x H x W back, got shape {tuple(out.shape)}.")
    got = out.mean(dim=(2, 3))  # 3 images x 3 channels
    mean = torch.tensor(pre.mean).view(1, 3)
    std = torch.tensor(pre.std).view(1, 3)
    expected = (values.float().view(3, 1) / 255 - mean) / std
    if torch.allclose(got, expected, atol=2e-3):
        return ok(f"Inputs are scaled to [0, 1] and normalised with mean={pre.mean}, std={pre.std}.")
    if float(got.abs().max()) > 20:
        return fail("Values are far too large: divide the uint8 pixels by 255 before normalising.")
    if torch.allclose(got, values.float().view(3, 1).expand(3, 3) / 255, atol=2e-3):
        return fail(
            f"You scaled to [0, 1] but did not normalise: subtract mean={pre.mean} and divide by "
            f"std={pre.std} (models.get_preprocessing(model))."
        )
    imagenet_mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3)
    imagenet_std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3)
    wrong = (values.float().view(3, 1) / 255 - imagenet_mean) / imagenet_std
    if torch.allclose(got, wrong, atol=2e-3):
        return fail(
            f"Wrong normalisation for this pretrained model: those are the torchvision ImageNet "
            f"statistics, but these weights expect mean={pre.mean}, std={pre.std}. Always ask "
            "models.get_preprocessing(model) instead of copying numbers."
        )
    swapped = (values.float().view(3, 1) / 255 - std) / mean
    if torch.allclose(got, swapped, atol=2e-3) and not torch.allclose(mean, std):
        return fail("Mean and std are swapped: x = (x - mean) / std.")
    return fail(
        f"A black/grey/white image should become {expected[:, 0].tolist()} (channel 0) but became "
        f"{[round(v, 3) for v in got[:, 0].tolist()]}. Use x = (pixels / 255 - mean) / std with "
        f"mean={pre.mean}, std={pre.std}."
    )


@_register("split_leakage", 2, "train and test sets are disjoint and both cover the classes")
def _check_split_leakage(train_data: Any, test_data: Any) -> CheckResult:
    train, test = _files(train_data), _files(test_data)
    if not train or not test:
        return fail("One of the sets is empty.")
    shared = sorted(set(train) & set(test))
    if shared:
        return fail(
            f"Data leakage: {len(shared)} test image(s) are also in the training set (e.g. {shared[0]}). "
            "Test images must never be seen in training: take the test set from data['test'], the "
            "training set from data['train']."
        )
    for name, data in (("training", train_data), ("test", test_data)):
        labels = getattr(data, "labels", None)
        if labels is not None and len(torch.as_tensor(labels).unique()) < 2:
            return fail(f"The {name} set has a single class; use a class-balanced subset such as .per_class(n).")
    return ok(f"{len(train)} training and {len(test)} test images, no overlap.")


# ----------------------------------------------------------------------------- feature extraction

_REFERENCE: dict[str, nn.Module] = {}


def _reference_extractor() -> nn.Module:
    if "lite0" not in _REFERENCE:
        from tl_helpers.models import load_backbone

        model = load_backbone("efficientnet_lite0").eval()
        model.reset_classifier(0)
        _REFERENCE["lite0"] = model
    return _REFERENCE["lite0"]


@_register("feature_extractor", 2, "a pretrained backbone that returns pooled features, in eval mode")
def _check_feature_extractor(extractor: Any) -> CheckResult:
    if not isinstance(extractor, nn.Module):
        return fail(f"Expected an nn.Module, got {type(extractor).__name__}.")
    model = copy.deepcopy(extractor).cpu().float()
    before = {n: m.running_mean.clone() for n, m in _batchnorms(model) if m.running_mean is not None}
    x = _probe_images(4)
    with torch.no_grad():
        out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == 4:
        return fail(
            f"The output is a feature map {tuple(out.shape)}, not a vector per image: pool it "
            "(timm: reset_classifier(0) keeps the global average pooling)."
        )
    if out.ndim != 2:
        return fail(f"Expected features N x D, got shape {tuple(out.shape)}.")
    if out.shape[1] == 1000:
        return fail(
            "1000 outputs: these are still ImageNet class scores. Remove the head "
            "(model.reset_classifier(0), load_backbone(..., num_classes=0) or nn.Identity())."
        )
    moved = any(not torch.equal(m.running_mean, before[n]) for n, m in _batchnorms(model) if n in before)
    if moved:
        return fail(
            "The extractor is in train mode: BatchNorm used the batch statistics and updated its "
            "running statistics. Call extractor.eval() before extracting features."
        )
    if out.shape[1] == 1280:
        with torch.no_grad():
            ref = _reference_extractor()(x)
        if not torch.allclose(out, ref, atol=1e-3, rtol=1e-3):
            return fail(
                "These 1280 features are not those of the pretrained EfficientNet-Lite0: did you load "
                "the ImageNet weights (pretrained=True)? Random-init features are far worse."
            )
    return ok(f"Pooled features of size {out.shape[1]} per image, in eval mode.")


@_register("probe_accuracy", 2, "test accuracy of a linear probe, measured on the test features")
def _check_probe_accuracy(acc: Any, clf: Any, X_train: Any, y_train: Any, X_test: Any, y_test: Any) -> CheckResult:
    import numpy as np

    acc = float(acc)
    Xtr, Xte = np.asarray(X_train, dtype=np.float64), np.asarray(X_test, dtype=np.float64)
    true_test = float(np.mean(clf.predict(np.asarray(X_test)) == np.asarray(y_test)))
    true_train = float(np.mean(clf.predict(np.asarray(X_train)) == np.asarray(y_train)))
    rows_train = {r.tobytes() for r in np.round(Xtr, 5)}
    shared = sum(r.tobytes() in rows_train for r in np.round(Xte, 5))
    if shared:
        return fail(
            f"Data leakage: {shared} test feature row(s) also appear in the training features. "
            "Extract the test features from a separate split."
        )
    if acc > 1.0 and abs(acc / 100 - true_test) < 0.01:
        return fail("Report accuracy as a fraction between 0 and 1, not a percentage.")
    if abs(acc - true_test) <= 0.005:
        if true_test < 0.5:
            return fail(f"Test accuracy {true_test:.1%} is low for pretrained features; check the features.")
        return ok(f"Linear probe test accuracy {true_test:.1%} (training accuracy {true_train:.1%}).")
    if abs(acc - true_train) <= 0.005:
        return fail(
            f"Accuracy computed on the wrong split: {acc:.1%} is the *training* accuracy; the test "
            f"accuracy is {true_test:.1%}. Score on X_test, y_test."
        )
    return fail(f"Your accuracy {acc:.1%} does not match this classifier on the test features ({true_test:.1%}).")


# ----------------------------------------------------------------------------- freezing and optimizers


@_register("freeze_backbone", 3, "every backbone parameter frozen, the head trainable")
def _check_freeze_backbone(model: Any) -> CheckResult:
    if not isinstance(model, nn.Module):
        return fail(f"Expected an nn.Module, got {type(model).__name__}.")
    head = _head_parameter_ids(model)
    named = list(model.named_parameters())
    backbone = [(n, p) for n, p in named if id(p) not in head]
    head_params = [(n, p) for n, p in named if id(p) in head]
    trainable_backbone = [n for n, p in backbone if p.requires_grad]
    frozen_head = [n for n, p in head_params if not p.requires_grad]
    if frozen_head:
        return fail(
            f"The head is frozen too ({frozen_head[0]}): nothing is left to learn. Freeze the backbone "
            "only, or unfreeze the head afterwards."
        )
    if len(trainable_backbone) == len(backbone) and backbone:
        return fail(
            "The backbone is not frozen: all its parameters still have requires_grad=True. Set "
            "requires_grad=False on every parameter except the head's (or use models.freeze(model))."
        )
    if trainable_backbone:
        return fail(
            f"The backbone is only partly frozen: {len(trainable_backbone)} of {len(backbone)} backbone "
            f"tensors are still trainable, e.g. {trainable_backbone[0]}. Freeze every parameter that is "
            "not in the head (loop over model.named_parameters())."
        )
    n_head = sum(p.numel() for _, p in head_params)
    return ok(f"Backbone frozen ({len(backbone)} tensors); head trainable ({n_head:,} parameters).")


@_register("bn_frozen", 2, "BatchNorm running statistics do not change in train mode")
def _check_bn_frozen(model: Any) -> CheckResult:
    model = copy.deepcopy(model).cpu().float()
    bns = _batchnorms(model)
    if not bns:
        return ok("This model has no BatchNorm layers.")
    before = {n: (m.running_mean.clone(), m.running_var.clone()) for n, m in bns if m.running_mean is not None}
    if not before:
        return fail(
            "BatchNorm layers do not track running statistics (track_running_stats=False): they use "
            "batch statistics at test time too. Keep the pretrained statistics instead."
        )
    model.train()  # what fit() does every epoch
    with torch.no_grad():
        model(_probe_images(4))
    moved = [
        n
        for n, m in bns
        if n in before and not (torch.equal(m.running_mean, before[n][0]) and torch.equal(m.running_var, before[n][1]))
    ]
    if moved:
        return fail(
            f"BatchNorm statistics still update in train mode ({len(moved)} of {len(bns)} layers, e.g. "
            f"{moved[0]}): requires_grad=False does not freeze running_mean/var, and fit() calls "
            "model.train(). Keep frozen BN layers in eval mode (models.freeze does this with a hook), "
            "or set their momentum to 0."
        )
    return ok(f"All {len(bns)} BatchNorm layers keep their pretrained statistics in train mode.")


@_register("trainable_count", 1, "number of trainable parameters (elements, not tensors)")
def _check_trainable_count(n_trainable: Any, model: Any) -> CheckResult:
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    n = int(n_trainable)
    if n == trainable:
        return ok(f"{n:,} trainable parameters.")
    if n == sum(p.numel() for p in params):
        return fail("That is the total number of parameters; count only those with requires_grad=True.")
    if n == sum(1 for p in params if p.requires_grad):
        return fail("That counts tensors, not numbers: sum p.numel() over the trainable parameters.")
    return fail(f"Expected {trainable:,} trainable parameters, got {n:,}.")


def _optimizer_vs_trainable(optimizer: Any, model: nn.Module) -> CheckResult | None:
    in_opt = _optimizer_param_ids(optimizer)
    names = {id(p): n for n, p in model.named_parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if not in_opt:
        return fail(
            "The optimizer received no parameters at all, so training changes nothing (accuracy stays "
            "near chance, and no error is raised). A common cause: a model.parameters() generator (or "
            "a (p for p in ...) expression) that was already consumed, e.g. by counting parameters. "
            "Make it a list: params = [p for p in model.parameters() if p.requires_grad]."
        )
    frozen = [names.get(i, "?") for i in in_opt if i not in trainable]
    if frozen:
        return fail(
            f"Frozen parameters were handed to the optimizer ({len(frozen)} tensors, e.g. {frozen[0]}): "
            "pass only parameters with requires_grad=True (they would otherwise cost memory, and "
            "weight decay can still change them)."
        )
    missing = [names[i] for i in trainable if i not in set(in_opt)]
    if missing:
        return fail(
            f"{len(missing)} trainable tensor(s) are missing from the optimizer, e.g. {missing[0]}: they "
            "will never be updated. Build the optimizer after freezing/replacing the head, from "
            "[p for p in model.parameters() if p.requires_grad]."
        )
    return None


@_register("optimizer_params", 2, "the optimizer holds exactly the trainable parameters")
def _check_optimizer_params(optimizer: Any, model: Any) -> CheckResult:
    problem = _optimizer_vs_trainable(optimizer, model)
    if problem:
        return problem
    n = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    return ok(f"The optimizer holds exactly the {n:,} trainable parameters.")


# ----------------------------------------------------------------------------- heads and evaluation


@_register("replace_head", 2, "a new 10-class head that fits the backbone's features")
def _check_replace_head(model: Any, num_classes: int = 10) -> CheckResult:
    if not isinstance(model, nn.Module):
        return fail(f"Expected an nn.Module, got {type(model).__name__}.")
    net = copy.deepcopy(model).cpu().float().eval()
    try:
        with torch.no_grad():
            out = net(_probe_images(2))
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
    head_ids = _head_parameter_ids(net)
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


@_register("evaluate_mode", 3, "accuracy measured in eval mode, without changing the model")
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


def _accuracy_on(model: nn.Module, data: Any, train_mode: bool = False, limit: int = 2000) -> float:
    from tl_helpers.data import BatchTransform

    pre = _preprocessing(model)
    size = int(data.images.shape[-1])
    transform = BatchTransform(pre.mean, pre.std, size, pre.interpolation)
    net = copy.deepcopy(model).cpu().float()
    net.train(train_mode)
    correct, n = 0, 0
    with torch.no_grad():
        for start in range(0, min(len(data), limit), 100):
            x = transform.transform(data.images[start : start + 100])
            y = data.labels[start : start + 100]
            correct += int((net(x).argmax(1) == y).sum())
            n += len(y)
    return correct / n


@_register("accuracy", 3, "test accuracy recomputed on the test split, in eval mode")
def _check_accuracy(acc: Any, model: Any, train_data: Any, test_data: Any) -> CheckResult:
    leak = _check_split_leakage(train_data, test_data)
    if not leak.passed:
        return leak
    acc = float(acc)
    if len(test_data) > 2000:
        return fail("Use a test subset of at most 2,000 images here (e.g. data['test'].per_class(30)).")
    true = _accuracy_on(model, test_data)
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
    train_acc = _accuracy_on(model, train_data, limit=2000)
    if abs(acc - train_acc) <= tol and abs(train_acc - true) > tol:
        return fail(
            f"Accuracy computed on the wrong split: {acc:.1%} matches the training images "
            f"({train_acc:.1%}); on the test images it is {true:.1%}."
        )
    return fail(
        f"Your accuracy {acc:.1%} does not match the model's test accuracy {true:.1%} (eval mode, the "
        "model's own normalisation)."
    )


def _optimizer_kind(optimizer: torch.optim.Optimizer) -> str:
    return "adam" if "adam" in type(optimizer).__name__.lower() else "sgd"


_MAX_LR = {"adam": 1e-2, "sgd": 0.1}
_MIN_LR = 1e-6


@_register("fine_tune_lr", 2, "a learning rate suitable for fine-tuning the pretrained backbone")
def _check_fine_tune_lr(optimizer: Any, model: Any) -> CheckResult:
    _optimizer_param_ids(optimizer)
    head = _head_parameter_ids(model)
    backbone_lrs = [float(g["lr"]) for g in optimizer.param_groups if any(id(p) not in head for p in g["params"])]
    if not any(g["params"] for g in optimizer.param_groups):
        return _optimizer_vs_trainable(optimizer, model) or fail("empty optimizer")
    if not backbone_lrs:
        return fail("This optimizer only trains the head: fine-tuning also updates the backbone.")
    kind = _optimizer_kind(optimizer)
    top, low = max(backbone_lrs), min(backbone_lrs)
    if top > _MAX_LR[kind]:
        return fail(
            f"Learning rate far too high for fine-tuning: {_fmt(top)} on pretrained layers would wreck the "
            f"pretrained features. With {type(optimizer).__name__} use about "
            f"{'1e-4 to 1e-3' if kind == 'adam' else '1e-3 to 1e-2'} for the backbone."
        )
    if low < _MIN_LR:
        return fail(f"Learning rate {_fmt(low)} is so low the backbone will barely change; try 1e-4.")
    return ok(
        f"Backbone learning rate {_fmt(top)} with {type(optimizer).__name__}: small enough to keep the "
        "pretrained features."
    )


@_register("discriminative_lr", 2, "head learns faster than the backbone; every trainable parameter included")
def _check_discriminative_lr(optimizer: Any, model: Any) -> CheckResult:
    problem = _optimizer_vs_trainable(optimizer, model)
    if problem:
        return problem
    head = _head_parameter_ids(model)
    lr_of = {id(p): float(g["lr"]) for g in optimizer.param_groups for p in g["params"]}
    head_lrs = [lr for i, lr in lr_of.items() if i in head]
    back_lrs = [lr for i, lr in lr_of.items() if i not in head]
    if not head_lrs or not back_lrs:
        return fail("Both the head and the backbone must be in the optimizer (in separate parameter groups).")
    if max(back_lrs) == min(head_lrs) and min(back_lrs) == max(head_lrs):
        return fail(
            "One learning rate everywhere: give the head a larger learning rate than the backbone "
            "(e.g. 10x), using parameter groups."
        )
    if max(back_lrs) >= min(head_lrs):
        return fail(
            f"The backbone's learning rate ({_fmt(max(back_lrs))}) is not below the head's "
            f"({_fmt(min(head_lrs))}): it is the other way round — the new head learns fast, the pretrained "
            "layers slowly."
        )
    return ok(f"Head lr {_fmt(min(head_lrs))}, backbone lr up to {_fmt(max(back_lrs))}.")


# ----------------------------------------------------------------------------- text (notebook 08)


def _learner_error(exc: BaseException, what: str) -> CheckResult:
    """A crash inside the learner's own function, reported with the line of their code that failed."""
    import traceback

    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "tl_helpers" not in f.filename and "site-packages" not in f.filename
    ]
    where = f" at line {frames[-1].lineno}: `{(frames[-1].line or '').strip()}`" if frames else ""
    return fail(f"Your {what} raised {type(exc).__name__}: {exc}{where}. Fix that line, then re-run the check.")


def _text_reference() -> tuple[nn.Module, Any]:
    if "minilm" not in _REFERENCE:
        from tl_helpers.text import load_encoder

        _REFERENCE["minilm"] = load_encoder()  # type: ignore[assignment]
    return _REFERENCE["minilm"]  # type: ignore[return-value]


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu()
    import numpy as np

    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


@_register("text_mean_pool", 2, "mean pooling over the real tokens only (the attention mask)")
def _check_text_mean_pool(mean_pool: Any) -> CheckResult:
    if not callable(mean_pool):
        return fail(f"Expected a function mean_pool(hidden, attention_mask), got {type(mean_pool).__name__}.")
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 6, 4, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    keep = hidden.clone(), mask.clone()
    try:
        out = mean_pool(hidden, mask)
    except Exception as exc:  # noqa: BLE001 - the learner's code
        return _learner_error(exc, "mean_pool")
    if not torch.equal(hidden, keep[0]) or not torch.equal(mask, keep[1]):
        return fail("mean_pool changed its inputs in place; compute a new tensor instead.")
    out = _as_tensor(out)
    if tuple(out.shape) != (3, 4):
        return fail(
            f"Expected one vector per sentence, shape (batch, hidden) = (3, 4); got {tuple(out.shape)}. "
            "Average over the token dimension (dim=1)."
        )
    m = mask.unsqueeze(-1).float()
    right = (hidden * m).sum(1) / m.sum(1)
    if torch.allclose(out, right, atol=1e-5):
        return ok("Padding is ignored: each sentence is the mean of its real tokens.")
    if torch.allclose(out, hidden.mean(1), atol=1e-5):
        return fail(
            "Padding included in the mean: the padded positions are averaged in, so a sentence's vector "
            "depends on its batch-mates. Multiply by the attention mask and divide by the number of real "
            "tokens."
        )
    if torch.allclose(out, (hidden * m).sum(1) / hidden.shape[1], atol=1e-5):
        return fail(
            "You zeroed the padding but divided by the padded length: divide by the number of real tokens "
            "(the mask's sum per sentence) instead."
        )
    if torch.allclose(out, hidden[:, 0], atol=1e-5):
        return fail(
            "This is the first token's ([CLS]) vector, not the mean over tokens; this encoder was trained "
            "with mean pooling."
        )
    return fail(
        "The result is not the mean over the real tokens. Per sentence: sum hidden * mask over tokens, "
        "divide by mask.sum()."
    )


_LONG = " ".join(["the film is long and the story goes on"] * 80)  # about 700 word pieces
_SENTENCES = ["not bad .", "a gorgeous , witty , seductive movie that never loses its sense of humour ."]


def _variants(sentences: list[str]) -> dict[str, torch.Tensor]:
    from tl_helpers.text import mean_pool

    encoder, tokenizer = _text_reference()
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=128, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        with_mask = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        no_mask = encoder(input_ids=ids).last_hidden_state
    return {
        "right": mean_pool(with_mask, mask),
        "mask_not_passed": mean_pool(no_mask, mask),
        "padding_in_mean": with_mask.mean(1),
        "neither": no_mask.mean(1),
        "cls": with_mask[:, 0],
    }


@_register("text_embed", 3, "sentence embeddings: attention mask passed, padding ignored, truncation on, eval mode")
def _check_text_embed(embed_sentences: Any) -> CheckResult:
    if not callable(embed_sentences):
        return fail(f"Expected a function embed_sentences(sentences), got {type(embed_sentences).__name__}.")
    try:
        first = _as_tensor(embed_sentences(list(_SENTENCES)))
        second = _as_tensor(embed_sentences(list(_SENTENCES)))
    except Exception as exc:  # noqa: BLE001
        return _learner_error(exc, "embed_sentences")
    if tuple(first.shape) != (2, 384):
        return fail(f"Expected one 384-number vector per sentence, shape (2, 384); got {tuple(first.shape)}.")
    if not torch.allclose(first, second, atol=1e-5):
        return fail(
            "Two calls on the same sentences gave different vectors: the encoder is in train mode, so "
            "dropout is on. Call encoder.eval() (and compute under torch.no_grad())."
        )
    refs = _variants(list(_SENTENCES))
    close = {name: bool(torch.allclose(first, ref, atol=2e-3, rtol=1e-3)) for name, ref in refs.items()}
    if not close["right"]:
        messages = {
            "mask_not_passed": "Attention mask not passed to the encoder: the short sentence's tokens attend to the "
            "padding. Call encoder(input_ids=..., attention_mask=...) (or encoder(**batch)).",
            "padding_in_mean": "Padding included in the mean: pool with the attention mask (your mean_pool), not "
            ".mean(1).",
            "neither": "Attention mask not passed to the encoder, and padding included in the mean: pass "
            "attention_mask to the encoder and pool with it.",
            "cls": "This is the [CLS] token's vector; this encoder was trained with mean pooling over the tokens.",
        }
        for name, message in messages.items():
            if close[name]:
                return fail(message)
        return fail(
            "These are not the encoder's mean-pooled embeddings. Tokenize with padding, run the encoder "
            "with the attention mask, then average the real tokens."
        )
    try:
        long_vec = _as_tensor(embed_sentences([_LONG, "short ."]))
    except Exception as exc:  # noqa: BLE001
        text = str(exc).lower()
        if isinstance(exc, (IndexError, RuntimeError)) or "index" in text or "size" in text:
            return fail(
                "Truncation off: a sentence longer than the encoder's 512 positions crashes it "
                f"({type(exc).__name__}). Tokenize with truncation=True (and a max_length such as 128)."
            )
        return _learner_error(exc, "embed_sentences")
    if tuple(long_vec.shape) != (2, 384):
        return fail(f"For two sentences (one very long) expected shape (2, 384); got {tuple(long_vec.shape)}.")
    return ok("Mean-pooled embeddings with the attention mask, truncation on, deterministic (eval mode).")


@_register("text_frozen_encoder", 2, "an encoder ready for feature extraction: frozen, dropout off")
def _check_text_frozen_encoder(encoder: Any) -> CheckResult:
    if not isinstance(encoder, nn.Module):
        return fail(f"Expected the encoder (an nn.Module), got {type(encoder).__name__}.")
    trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    total = sum(p.numel() for p in encoder.parameters())
    if trainable:
        return fail(
            f"The encoder is left trainable: {trainable:,} of {total:,} parameters still require "
            "gradients. For feature extraction set requires_grad=False on every parameter."
        )
    if encoder.training or any(m.training for m in encoder.modules()):
        return fail(
            "The encoder is frozen but in train mode: dropout is on, so the same sentence gets a different "
            "embedding each time. Call encoder.eval()."
        )
    return ok(f"All {total:,} parameters frozen and dropout off.")


def _shared_rows(X_fit: torch.Tensor, X_test: torch.Tensor, tol: float = 1e-3) -> int:
    """How many rows of ``X_test`` also appear (up to float noise) in ``X_fit``."""
    shared = 0
    for chunk in X_test.split(512):
        shared += int((torch.cdist(chunk, X_fit).min(1).values < tol * (1 + chunk.norm(dim=1))).sum())
    return shared


@_register("text_probe", 3, "a probe fitted on training sentences only, scored on the test sentences")
def _check_text_probe(clf: Any, X_fit: Any, y_fit: Any, X_test: Any, y_test: Any, test_acc: Any) -> CheckResult:
    if not hasattr(clf, "predict"):
        return fail(f"clf should be a fitted classifier with .predict(); got {type(clf).__name__}.")
    X_fit, X_test = _as_tensor(X_fit), _as_tensor(X_test)
    y_fit, y_test = torch.as_tensor(_as_tensor(y_fit)).long(), torch.as_tensor(_as_tensor(y_test)).long()
    if X_fit.ndim != 2 or X_test.ndim != 2 or X_fit.shape[1] != X_test.shape[1]:
        return fail(
            f"X_fit and X_test should be (sentences, features) tables with the same width; got "
            f"{tuple(X_fit.shape)} and {tuple(X_test.shape)}."
        )
    shared = _shared_rows(X_fit, X_test)
    if shared:
        return fail(
            f"Test sentences used for fitting: {shared} of the {len(X_test)} test embeddings are also in "
            "X_fit. Fit on the training sentences only; the test set is for the final score."
        )
    if not is_finite_number(test_acc):
        return fail(f"test_acc should be a number, got {type(test_acc).__name__}.")
    measured = float((torch.as_tensor(clf.predict(X_test.numpy())) == y_test).float().mean())
    if abs(float(test_acc) - measured) > 1e-6 and abs(float(test_acc) / 100 - measured) > 1e-4:
        return fail(
            f"test_acc = {float(test_acc):.4f}, but clf scores {measured:.4f} on X_test: report the "
            "accuracy of this classifier on the test embeddings."
        )
    fit_acc = float((torch.as_tensor(clf.predict(X_fit.numpy())) == y_fit).float().mean())
    if measured < 0.62:
        return fail(
            f"Test accuracy {measured:.1%} is low for this encoder (a probe on 200 sentences reaches about "
            f"70 %); training accuracy is {fit_acc:.1%}. Check that X_fit and y_fit belong together."
        )
    return ok(f"Fitted on {len(X_fit)} training sentences only; test accuracy {measured:.1%}.")


@_register("text_fine_tune_lr", 2, "fine-tuning a BERT-family model: every parameter, a low learning rate")
def _check_text_fine_tune_lr(optimizer: Any, model: Any) -> CheckResult:
    if not isinstance(optimizer, torch.optim.Optimizer) or not isinstance(model, nn.Module):
        return fail("Expected a torch optimizer and the model (encoder + new head).")
    in_optimizer = {id(p): float(g["lr"]) for g in optimizer.param_groups for p in g["params"]}
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    encoder_params = [p for p in model.parameters() if id(p) not in head_ids]
    if head_ids and not head_ids & set(in_optimizer):
        return fail(
            "The new head is not in the optimizer: it would stay random. Build the optimizer from model.parameters()."
        )
    if not any(id(p) in in_optimizer for p in encoder_params):
        return fail(
            "Only the head trains: that is feature extraction, not fine-tuning. Give the optimizer the "
            "encoder's parameters too (model.parameters())."
        )
    frozen = sum(p.numel() for p in encoder_params if not p.requires_grad)
    if frozen:
        return fail(f"{frozen:,} encoder parameters are frozen (requires_grad=False): fine-tuning updates them all.")
    lrs = [in_optimizer[id(p)] for p in encoder_params if id(p) in in_optimizer]
    top, low = max(lrs), min(lrs)
    if top > 2e-4:
        return fail(
            f"Learning rate far too high for a BERT-family model: {_fmt(top)} on the pretrained encoder "
            "wrecks what it learned (training often collapses to one class). Use about 2e-5 to 5e-5 "
            "with AdamW."
        )
    if low < 1e-6:
        return fail(f"Learning rate {_fmt(low)} is so low that nothing moves in a few epochs; use 2e-5 to 5e-5.")
    return ok(f"Every parameter trains, encoder learning rate {_fmt(top)}: the usual range for BERT-family models.")


# ----------------------------------------------------------------------------- assignments

# notebook stem -> [(gradebook column, check id, notebook variables passed to the check)]
ASSIGNMENTS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "02_feature_extraction_exercises": [
        ("normalisation", "normalisation", ("normalise", "model")),
        ("feature_extractor", "feature_extractor", ("extractor",)),
        ("split_leakage", "split_leakage", ("train_small", "test_small")),
        ("probe_accuracy", "probe_accuracy", ("acc", "clf", "X_train", "y_train", "X_test", "y_test")),
    ],
    "03_freezing_exercises": [
        ("freeze_backbone", "freeze_backbone", ("model",)),
        ("bn_frozen", "bn_frozen", ("model",)),
        ("trainable_count", "trainable_count", ("n_trainable", "model")),
        ("optimizer_params", "optimizer_params", ("optimizer", "model")),
    ],
    "04_replacing_the_head_exercises": [
        ("replace_head", "replace_head", ("model",)),
        ("replace_head_resnet", "replace_head", ("resnet",)),
        ("evaluate_mode", "evaluate_mode", ("evaluate_accuracy",)),
    ],
    "05_fine_tuning_low_lr_exercises": [
        ("fine_tune_lr", "fine_tune_lr", ("optimizer", "model")),
        ("discriminative_lr", "discriminative_lr", ("optimizer_groups", "model")),
        ("accuracy", "accuracy", ("test_acc", "model", "train_small", "test_small")),
    ],
    "08_transfer_in_language_exercises": [
        ("mean_pool", "text_mean_pool", ("mean_pool",)),
        ("embed", "text_embed", ("embed_sentences",)),
        ("frozen_encoder", "text_frozen_encoder", ("encoder",)),
        ("probe", "text_probe", ("clf", "X_fit", "y_fit", "X_test", "y_test", "test_acc")),
        ("fine_tune_lr", "text_fine_tune_lr", ("optimizer", "model")),
    ],
    "06_capstone_quick_check_exercises": [
        ("split_leakage", "split_leakage", ("train_small", "test_small")),
        ("normalisation", "normalisation", ("train_loader", "model")),
        ("optimizer_params", "optimizer_params", ("optimizer", "model")),
        ("fine_tune_lr", "fine_tune_lr", ("optimizer", "model")),
        ("accuracy", "accuracy", ("test_acc", "model", "train_small", "test_small")),
    ],
}


def is_finite_number(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
