"""The checks' machinery: results, the registry of check functions, ``run_check()`` and helpers shared by topics.

A check function (:data:`CHECKS`) tests one kind of answer; an exercise (:mod:`.registry`) is what a learner
meets, under one id, and runs one check function (several exercises may share one).

Checks test *behaviour*, not one exact answer: they look at what the learner's objects do (which
parameters require gradients, whether BatchNorm statistics move in train mode, what a model outputs
for a small batch, which parameters an optimizer holds...), so any correct solution passes and each
common mistake gets a targeted message. Every check works on copies and tiny inputs, runs in a few
seconds on a CPU, and never modifies the learner's objects.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

__all__ = [
    "CHECKS",
    "REFERENCE",
    "Check",
    "CheckResult",
    "accuracy_on",
    "batchnorms",
    "fail",
    "files_of",
    "fmt",
    "head_parameter_ids",
    "is_finite_number",
    "is_learner_file",
    "learner_crash",
    "learner_error",
    "learner_hooks",
    "ok",
    "optimizer_kind",
    "optimizer_param_ids",
    "optimizer_vs_trainable",
    "preprocessing_of",
    "probe_images",
    "reference_extractor",
    "register",
    "run_check",
]


@dataclass(frozen=True)
class CheckResult:
    """What a check found.

    Attributes:
        passed: Whether the answer behaves correctly.
        feedback: What the learner reads: why it passed, or which mistake it is and how to fix it.
        mistake: For a failure, a short name of the mistake (``"bn_momentum_zero"``, ...): the class
            summary counts failures by it, so an instructor sees what to re-teach. ``None`` when the
            check could not name one (the summary then groups by the feedback's first sentence).
    """

    passed: bool
    feedback: str
    mistake: str | None = None

    def __repr__(self) -> str:  # short: the message was already printed by check()
        return f"<{'passed' if self.passed else 'failed'}>"


@dataclass(frozen=True)
class Check:
    id: str
    points: int
    description: str
    function: Callable[..., CheckResult] = field(repr=False)


CHECKS: dict[str, Check] = {}


def register(id: str, points: int, description: str):
    def wrap(function: Callable[..., CheckResult]) -> Callable[..., CheckResult]:
        CHECKS[id] = Check(id, points, description, function)
        return function

    return wrap


def ok(message: str) -> CheckResult:
    return CheckResult(True, message)


def fail(message: str, mistake: str | None = None) -> CheckResult:
    """A failed check: ``message`` names the mistake for the learner, ``mistake`` for the class summary."""
    return CheckResult(False, message, mistake)


def run_check(id: str, *objects: Any) -> CheckResult:
    """Run one check function and return its result, printing nothing (the grader's and the tests' entry).

    ``id`` names a check function (:data:`CHECKS`); learners call :func:`tl_helpers.checks.check` with an
    exercise id instead. A crash inside the check is a failed result, not an exception.

    Raises:
        KeyError: ``id`` is not a registered check function.
    """
    if id not in CHECKS:
        raise KeyError(f"Unknown check function {id!r}. Check functions: {', '.join(sorted(CHECKS))}")
    try:
        result = CHECKS[id].function(*objects)
    except NotImplementedError:
        return fail("Not done yet: the exercise cell still raises NotImplementedError.", mistake="not_done")
    except Exception as exc:  # the learner's own code crashed, or a wrong object type...
        crash = learner_crash(exc, objects)
        if crash is not None:
            return crash
        return fail(f"The check could not use your objects: {type(exc).__name__}: {exc}", mistake="unusable_objects")
    if not isinstance(result, CheckResult):  # pragma: no cover - our own bug
        return fail(f"internal error in check {id!r}", mistake="check_error")
    return result


# ----------------------------------------------------------------------------- helpers


def head_parameter_ids(model: nn.Module) -> set[int]:
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


def optimizer_param_ids(optimizer: Any) -> list[int]:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"expected a torch.optim optimizer, got {type(optimizer).__name__}")
    return [id(p) for group in optimizer.param_groups for p in group["params"]]


def batchnorms(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def probe_images(n: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def preprocessing_of(model: Any):
    from tl_helpers.models import get_preprocessing

    if isinstance(model, str):
        return get_preprocessing(model)
    try:
        return get_preprocessing(model)
    except Exception:
        return get_preprocessing("efficientnet_lite0")


def files_of(data: Any) -> list[str]:
    if hasattr(data, "files"):
        return list(data.files)
    if isinstance(data, (list, tuple)):
        return [x[0] if isinstance(x, (list, tuple)) else str(x) for x in data]
    raise TypeError(f"expected ImageTensors or a list of file names, got {type(data).__name__}")


def fmt(x: float) -> str:
    return f"{x:.3g}"


REFERENCE: dict[str, nn.Module] = {}


def reference_extractor() -> nn.Module:
    if "lite0" not in REFERENCE:
        from tl_helpers.models import load_backbone

        model = load_backbone("efficientnet_lite0").eval()
        model.reset_classifier(0)
        REFERENCE["lite0"] = model
    return REFERENCE["lite0"]


def optimizer_vs_trainable(optimizer: Any, model: nn.Module) -> CheckResult | None:
    """What is wrong with the optimizer's parameters for ``model`` (None: exactly the trainable ones)."""
    in_opt = optimizer_param_ids(optimizer)
    names = {id(p): n for n, p in model.named_parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    if not in_opt:
        return fail(
            "The optimizer received no parameters at all, so it can train nothing: the course's fit() "
            "stops at once with ValueError ('The optimizer holds no trainable parameters'), and a "
            "hand-written training loop would run without an error but change nothing (accuracy stays "
            "near chance). A common cause: a model.parameters() generator (or a (p for p in ...) "
            "expression) that was already consumed, e.g. by counting parameters. "
            "Make it a list: params = [p for p in model.parameters() if p.requires_grad].",
            mistake="optimizer_empty",
        )
    if not any(i in names for i in in_opt):
        return fail(
            f"None of the optimizer's {len(in_opt)} tensors belong to this model: it was built on another "
            "model object (a copy, or the model before you reassigned the variable). Build the optimizer "
            "from this model's parameters, after freezing and replacing the head.",
            mistake="optimizer_other_model",
        )
    frozen = [names.get(i, "?") for i in in_opt if i not in trainable]
    if frozen:
        return fail(
            f"Frozen parameters were handed to the optimizer ({len(frozen)} tensors, e.g. {frozen[0]}): "
            "pass only parameters with requires_grad=True (they would otherwise cost memory, and "
            "weight decay can still change them).",
            mistake="optimizer_frozen_params",
        )
    missing = [names[i] for i in trainable if i not in set(in_opt)]
    if missing:
        return fail(
            f"{len(missing)} trainable tensor(s) are missing from the optimizer, e.g. {missing[0]}: they "
            "will never be updated. Build the optimizer after freezing/replacing the head, from "
            "[p for p in model.parameters() if p.requires_grad].",
            mistake="optimizer_missing_params",
        )
    repeated = sorted({names.get(i, "?") for i in in_opt if in_opt.count(i) > 1})
    if repeated:
        return fail(
            f"{len(repeated)} tensor(s) were given to the optimizer more than once, e.g. {repeated[0]}: each "
            "step would move them twice (and PyTorch warns about duplicates). Build the parameter list once, "
            "e.g. [p for p in model.parameters() if p.requires_grad], without adding the head's again.",
            mistake="optimizer_duplicate_params",
        )
    return None


def accuracy_on(model: nn.Module, data: Any, train_mode: bool = False, limit: int = 2000) -> float:
    from tl_helpers.data import BatchTransform

    pre = preprocessing_of(model)
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


def optimizer_kind(optimizer: torch.optim.Optimizer) -> str:
    return "adam" if "adam" in type(optimizer).__name__.lower() else "sgd"


def is_learner_file(filename: str) -> bool:
    """Whether code from ``filename`` is the learner's (a notebook cell, their own file), not a library's.

    Notebook cells are ``<ipython-input-...>`` or ``/tmp/ipykernel_*/...py``; anything under
    ``tl_helpers``, ``site-packages``/``dist-packages`` or the standard library is not the learner's.
    """
    import sysconfig

    if "tl_helpers" in filename or "site-packages" in filename or "dist-packages" in filename:
        return False
    if filename.startswith("<"):
        return filename.startswith("<ipython-input") or filename == "<stdin>"
    stdlib = sysconfig.get_paths().get("stdlib") or ""
    return not (stdlib and filename.startswith(stdlib))


def learner_error(exc: BaseException, what: str) -> CheckResult:
    """A crash inside the learner's own function, reported with the line of their code that failed."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if is_learner_file(f.filename)]
    where = f" at line {frames[-1].lineno}: `{(frames[-1].line or '').strip()}`" if frames else ""
    return fail(
        f"Your {what} raised {type(exc).__name__}: {exc}{where}. Fix that line, then re-run the check.",
        mistake="not_done" if isinstance(exc, NotImplementedError) else "crash",
    )


def learner_hooks(objects: tuple[Any, ...]) -> list[tuple[str, str, Callable[..., Any]]]:
    """The forward hooks the learner registered on the modules among ``objects``: (module name, kind, hook)."""
    found: list[tuple[str, str, Callable[..., Any]]] = []
    for obj in objects:
        if not isinstance(obj, nn.Module):
            continue
        for name, module in obj.named_modules():
            for kind, hooks in (
                ("forward pre-hook", module._forward_pre_hooks),
                ("forward hook", module._forward_hooks),
            ):
                for hook in hooks.values():
                    code = getattr(hook, "__code__", None) or getattr(getattr(hook, "__func__", None), "__code__", None)
                    if code is not None and is_learner_file(code.co_filename):
                        found.append((name or type(obj).__name__, kind, hook))
    return found


def _return_line(hook: Callable[..., Any]) -> str:
    import inspect

    try:
        lines, start = inspect.getsourcelines(hook)
    except (OSError, TypeError):
        return ""
    returns = [(start + i, line.strip()) for i, line in enumerate(lines) if line.strip().startswith("return")]
    if returns:
        return f" at line {returns[-1][0]}: `{returns[-1][1]}`"
    return f" (defined at line {start}: `{lines[0].strip()}`)" if lines else ""


def learner_crash(exc: BaseException, objects: tuple[Any, ...]) -> CheckResult | None:
    """A crash a check hit that is the learner's bug: their code raised, or a hook of theirs broke the model.

    Returns ``None`` when the learner's code is not involved (then the objects were of the wrong kind).
    """
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if is_learner_file(f.filename)]
    if frames:
        name = frames[-1].name
        return learner_error(exc, "code" if name.startswith("<") else f"function `{name}`")
    hooks = learner_hooks(objects)
    if hooks:
        module, kind, hook = hooks[0]
        name = getattr(hook, "__name__", "hook")
        return fail(
            f"Your {kind} `{name}` (on {module}) broke the model's forward pass: {type(exc).__name__}: {exc}"
            f"{_return_line(hook)}. A forward pre-hook must return None (or the new inputs as a tuple), and a "
            "forward hook None (or the new output), never the module itself. Fix that line, then re-run the check.",
            mistake="crash",
        )
    return None


def is_finite_number(x: Any) -> bool:
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
