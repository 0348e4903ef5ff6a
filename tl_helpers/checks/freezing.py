"""Checks of freezing: requires_grad, BatchNorm statistics, trainable counts, the optimizer's parameters.

The BatchNorm check runs the learner's own model (their hooks, their overridden ``train()``) in train
mode, as ``fit()`` does, and restores every flag and statistic afterwards. A crash inside the learner's
code is reported as their mistake, with the line that failed.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Callable

import torch
from torch import nn

from tl_helpers.checks.core import (
    CheckResult,
    batchnorms,
    fail,
    head_parameter_ids,
    learner_error,
    ok,
    optimizer_vs_trainable,
    probe_images,
    register,
)
from tl_helpers.checks.registry import exercise

__all__ = ["learner_hooks", "return_line", "run_learner_forward"]


# ----------------------------------------------------------------------------- the learner's hooks


def learner_hooks(model: nn.Module) -> list[tuple[str, str, Callable[..., Any]]]:
    """The forward (pre-)hooks the learner registered: ``(module name, "pre-hook" | "hook", function)``.

    The course's own hooks (``tl_helpers``) are left out.
    """
    found: list[tuple[str, str, Callable[..., Any]]] = []
    for name, module in model.named_modules():
        for kind, hooks in (("forward pre-hook", module._forward_pre_hooks), ("forward hook", module._forward_hooks)):
            for fn in hooks.values():
                if not str(getattr(fn, "__module__", "") or "").startswith("tl_helpers"):
                    found.append((name or "model", kind, fn))
    return found


def _function_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__name__", None) or type(fn).__name__)


def return_line(fn: Callable[..., Any]) -> str:
    """``" (line N: `return module`)"`` for the last ``return <value>`` of ``fn``'s source, or ``""``."""
    try:
        lines, start = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return ""
    if _function_name(fn) == "<lambda>":
        return f" (line {start}: `{lines[0].strip()}`)"
    for offset in range(len(lines) - 1, -1, -1):
        text = lines[offset].strip()
        if text.startswith("return ") and text != "return None":
            return f" (line {start + offset}: `{text}`)"
    return ""


def _describe_return(value: Any) -> str:
    return type(value).__name__ if not isinstance(value, nn.Module) else f"the module itself ({type(value).__name__})"


def run_learner_forward(model: nn.Module, x: torch.Tensor, what: str) -> CheckResult | None:
    """Run ``model(x)``; if it crashes, say which part of the learner's code caused it (None: it ran).

    Pre-hooks are watched while the model runs: one that returns a value makes PyTorch pass that value
    to the layer instead of its input (returning the module is the classic slip).
    """
    returned: list[tuple[str, Callable[..., Any], Any]] = []
    saved: list[tuple[dict[int, Any], int, Any]] = []
    names: dict[int, str] = {}
    for name, module in model.named_modules():
        hooks = module._forward_pre_hooks
        for key, fn in list(hooks.items()):
            if str(getattr(fn, "__module__", "") or "").startswith("tl_helpers"):
                continue

            def watched(*args: Any, _fn: Any = fn, _name: str = name or "model") -> Any:
                result = _fn(*args)
                if result is not None:
                    returned.append((_name, _fn, result))
                return result

            saved.append((hooks, key, fn))
            names[id(hooks)] = name or "model"
            hooks[key] = watched
    try:
        with torch.no_grad():
            model(x)
    except Exception as exc:
        bad = [(n, fn, r) for n, fn, r in returned if not isinstance(r, (torch.Tensor, tuple))]
        if bad:
            name, fn, value = bad[0]
            return fail(
                f"Your forward pre-hook {_function_name(fn)}() returns {_describe_return(value)}"
                f"{return_line(fn)} on layer {name}: PyTorch passes whatever a forward pre-hook returns to the "
                f"layer as its new input, so the model crashed ({type(exc).__name__}: {exc}). A pre-hook that "
                "only switches the layer to eval mode must return nothing (None): delete the return (and "
                "note that module.eval() returns the module, so a lambda that calls it returns it too).",
                mistake="pre_hook_returns_value",
            )
        if isinstance(exc, RecursionError):
            result = learner_error(exc, what)
            return fail(
                f"{result.feedback} A RecursionError means your function calls itself: if you replaced "
                "model.train, call the original with nn.Module.train(model, mode) (or super().train(mode)).",
                mistake="train_recursion",
            )
        mine = learner_error(exc, what)
        if " at line " in mine.feedback:
            return mine
        hooks_here = [(n, kind, fn) for n, kind, fn in learner_hooks(model) if kind == "forward hook"]
        hooks_here = [(str(names.get(id(h), "a layer")), "forward pre-hook", fn) for h, _, fn in saved] + hooks_here
        if hooks_here:
            name, kind, fn = hooks_here[0]
            return fail(
                f"Running your model raised {type(exc).__name__}: {exc}. It has your {kind} "
                f"{_function_name(fn)}() on {name}: PyTorch calls a pre-hook as hook(module, inputs) and a "
                "forward hook as hook(module, inputs, output); check its signature and what it returns.",
                mistake="hook_signature",
            )
        return mine
    finally:
        for hooks, key, fn in saved:
            hooks[key] = fn
    return None


# ----------------------------------------------------------------------------- checks


def _plain_requires_grad_attribute(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if "requires_grad" in vars(module):
            return name or "model"
    return None


@register("freeze_backbone", 3, "every backbone parameter frozen, the head trainable")
def _check_freeze_backbone(model: Any) -> CheckResult:
    if not isinstance(model, nn.Module):
        return fail(f"Expected an nn.Module, got {type(model).__name__}.", mistake="not_a_module")
    head = head_parameter_ids(model)
    named = list(model.named_parameters())
    backbone = [(n, p) for n, p in named if id(p) not in head]
    head_params = [(n, p) for n, p in named if id(p) in head]
    trainable_backbone = [n for n, p in backbone if p.requires_grad]
    frozen_head = [n for n, p in head_params if not p.requires_grad]
    if frozen_head:
        return fail(
            f"The head is frozen too ({frozen_head[0]}): nothing is left to learn. Freeze the backbone "
            "only, or set requires_grad=True on the head's parameters afterwards.",
            mistake="head_frozen",
        )
    if len(trainable_backbone) == len(backbone) and backbone:
        attribute = _plain_requires_grad_attribute(model)
        if attribute:
            return fail(
                f"`{attribute}.requires_grad = False` only sets a plain Python attribute on the module: a "
                "module has no requires_grad flag, its parameters do, so nothing was frozen. Set "
                "p.requires_grad = False on each parameter (or call the module's requires_grad_(False)).",
                mistake="module_attribute_requires_grad",
            )
        return fail(
            "The backbone is not frozen: all its parameters still have requires_grad=True. Set "
            "requires_grad=False on every parameter except the head's.",
            mistake="backbone_not_frozen",
        )
    bn_params = {id(p) for _, m in batchnorms(model) for p in m.parameters(recurse=False)}
    trainable_bn = [n for n, p in backbone if p.requires_grad and id(p) in bn_params]
    if trainable_bn and len(trainable_bn) == len(trainable_backbone):
        return fail(
            f"The BatchNorm layers' own weights are still trainable ({len(trainable_bn)} tensors, e.g. "
            f"{trainable_bn[0]}): their scale and shift (weight, bias) are parameters of the backbone too. "
            "Freeze every backbone parameter, BatchNorm's included (keeping BN trainable is a choice for "
            "fine-tuning, not for a frozen backbone).",
            mistake="bn_affine_trainable",
        )
    if trainable_backbone:
        return fail(
            f"The backbone is only partly frozen: {len(trainable_backbone)} of {len(backbone)} backbone "
            f"tensors are still trainable, e.g. {trainable_backbone[0]}. Freeze every parameter that is "
            "not in the head (loop over model.named_parameters(), not over one block).",
            mistake="backbone_partly_frozen",
        )
    n_head = sum(p.numel() for _, p in head_params)
    return ok(f"Backbone frozen ({len(backbone)} tensors); head trainable ({n_head:,} parameters).")


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _eval_output(module: nn.Module, x: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """What ``module`` (a BatchNorm layer) gives for ``x`` in eval mode with ``stats`` as running statistics.

    Runs a bare copy (no hooks, no overridden train()): timm's BatchNormAct2d applies its activation too.
    """
    twin = copy.deepcopy(module)
    twin._forward_pre_hooks.clear()
    twin._forward_hooks.clear()
    vars(twin).pop("train", None)
    nn.Module.train(twin, False)
    twin.track_running_stats = True
    with torch.no_grad():
        for name, value in stats.items():
            if name in twin._buffers:
                twin._buffers[name] = value.clone()
        return twin(x)


def _bn_diagnosis(bad: list[str], layers: dict[str, nn.Module], in_train: set[str], n_bn: int) -> tuple[str, str]:
    """Why the layers in ``bad`` normalise with batch statistics in train mode: (message, mistake name)."""
    first = bad[0]
    some = f"{len(bad)} of {n_bn} BatchNorm layers (e.g. {first})"
    behaviour = (
        "in train mode they still normalise each batch with that batch's own mean and variance, so the head "
        "learns on features it never sees at evaluation, where the pretrained statistics are used"
    )
    fix = (
        "Keep the frozen BatchNorm layers in eval mode through model.train(): a forward pre-hook that calls "
        "module.eval() on the module it receives, or an overridden train()"
    )
    if all(layers[n].momentum == 0 for n in bad):
        return (
            f"momentum = 0 stops the running statistics from moving in {some}, but {behaviour}. {fix}.",
            "bn_momentum_zero",
        )
    if all(not layers[n].track_running_stats for n in bad):
        return (
            f"track_running_stats = False stops {some} from updating their running statistics, but {behaviour} "
            f"(and without tracking they use batch statistics at evaluation too). {fix}.",
            "bn_tracking_off",
        )
    if all(n in in_train for n in bad):
        return (
            f"The running statistics of {some} end up unchanged (put back after the forward pass), but {behaviour}. "
            f"Restoring the numbers afterwards does not change what the layer computed. {fix}.",
            "bn_stats_copied_back",
        )
    return (
        f"In train mode {some} do not give what they give in eval mode with the pretrained statistics: "
        f"{behaviour}. {fix}.",
        "bn_output_differs",
    )


@register("bn_frozen", 2, "frozen BatchNorm layers normalise with their pretrained statistics in train mode too")
def _check_bn_frozen(model: Any) -> CheckResult:
    if not isinstance(model, nn.Module):
        return fail(f"Expected an nn.Module, got {type(model).__name__}.", mistake="not_a_module")
    bns = batchnorms(model)
    if not bns:
        return ok("This model has no BatchNorm layers.")
    layers = dict(bns)
    untracked = [n for n, m in bns if m.running_mean is None or m.running_var is None]
    if untracked:
        return fail(
            f"{len(untracked)} of {len(bns)} BatchNorm layers have no running statistics at all (e.g. "
            f"{untracked[0]}; built with track_running_stats=False, or running_mean set to None): they normalise "
            "with each batch's statistics in training and at evaluation, and the pretrained statistics are "
            "gone. Keep the pretrained running_mean/running_var and keep the layers in eval mode.",
            mistake="bn_no_running_stats",
        )
    # The learner's own model runs (their hooks, their train()); every flag and buffer is put back after.
    modes = {m: m.training for m in model.modules()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    pretrained = {n: {k: b.detach().clone() for k, b in m._buffers.items() if b is not None} for n, m in bns}
    eval_before = {n for n, m in bns if not m.training}
    seen: dict[str, tuple[torch.Tensor, torch.Tensor, bool]] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if name not in seen and inputs and isinstance(inputs[0], torch.Tensor) and isinstance(output, torch.Tensor):
                seen[name] = (inputs[0].detach().clone(), output.detach().clone(), module.training)

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in bns]
    try:
        try:
            model.train()  # what fit() does at the start of every epoch
        except Exception as exc:
            problem = learner_error(exc, "model.train()")
            if isinstance(exc, RecursionError):
                return fail(
                    f"{problem.feedback} Your train() calls itself: inside it, call the original with "
                    "nn.Module.train(model, mode) (or super().train(mode) in a subclass).",
                    mistake="train_recursion",
                )
            return problem
        problem = run_learner_forward(
            model, probe_images(4).to(_device_of(model)), "code that runs with the model (a hook or train())"
        )
        if problem:
            return problem
        moved = [
            n
            for n, m in bns
            if not (
                torch.equal(m.running_mean, pretrained[n]["running_mean"])
                and torch.equal(m.running_var, pretrained[n]["running_var"])
            )
        ]
        tracking = {n for n, m in bns if m.track_running_stats}
        momentum = {n: m.momentum for n, m in bns}
        differs = []
        for n, _ in bns:
            if n not in seen:
                continue
            x, out, _training = seen[n]
            want = _eval_output(layers[n], x, pretrained[n])
            if not torch.allclose(out, want, atol=1e-4, rtol=1e-3):
                differs.append(n)
        in_train = {n for n in seen if seen[n][2]}
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in buffers:
                    b.copy_(buffers[n])
        for m, mode in modes.items():
            m.training = mode
    if not moved and not differs:
        return ok(
            f"All {len(bns)} BatchNorm layers keep their pretrained statistics in train mode and normalise with "
            "them, exactly as in eval mode."
        )
    hooked = {n for n, kind, _ in learner_hooks(model) if kind == "forward pre-hook"}
    wrong = sorted(set(moved) | set(differs), key=list(layers).index)
    wrong_hooked = [n for n in wrong if n in hooked]
    if wrong_hooked:
        return fail(
            f"{len(wrong_hooked)} BatchNorm layers have your forward pre-hook but still run in train mode (e.g. "
            f"{wrong_hooked[0]}): the hook must switch the module it receives (its first argument) to eval mode, "
            "e.g. module.eval() — a lambda that uses the loop variable switches only the last layer, and "
            "module.eval without () does nothing.",
            mistake="bn_hook_wrong_module",
        )
    if moved and set(moved) <= eval_before:
        return fail(
            f"Your BatchNorm layers were in eval mode, but fit() calls model.train() at the start of every "
            f"epoch, which switches them back ({len(moved)} of {len(bns)} layers then update their statistics, "
            f"e.g. {moved[0]}). Calling .eval() once is not enough: keep them in eval mode through model.train() "
            "with a forward pre-hook (module.eval() before each forward) or an overridden train().",
            mistake="bn_eval_once",
        )
    if moved and len(wrong) == len(bns) and len(moved) == len(bns):
        return fail(
            f"BatchNorm statistics still update in train mode (all {len(bns)} layers, e.g. {moved[0]}), and the "
            "layers normalise with each batch's statistics: requires_grad=False freezes neither, and fit() calls "
            "model.train(). Keep frozen BN layers in eval mode through model.train() (a forward pre-hook that "
            "calls module.eval(), or an overridden train()).",
            mistake="bn_not_frozen",
        )
    if len(wrong) < len(bns) and not ({n for n in wrong if momentum[n] == 0 or n not in tracking}):
        return fail(
            f"Only some BatchNorm layers are kept frozen: {len(wrong)} of {len(bns)} still run in train mode "
            f"(e.g. {wrong[0]}, a {type(layers[wrong[0]]).__name__}). Find them all, e.g. "
            "isinstance(m, nn.modules.batchnorm._BatchNorm) or nn.BatchNorm2d (timm's BatchNormAct2d is one), "
            "not type(m) == nn.BatchNorm2d or a name pattern.",
            mistake="bn_some_layers",
        )
    if moved:
        return fail(
            f"BatchNorm statistics still update in train mode ({len(moved)} of {len(bns)} layers, e.g. {moved[0]}): "
            "keep every frozen BN layer in eval mode through model.train() (a forward pre-hook that calls "
            "module.eval(), or an overridden train()).",
            mistake="bn_not_frozen",
        )
    message, mistake = _bn_diagnosis(differs, layers, in_train, len(bns))
    return fail(message, mistake=mistake)


@register("trainable_count", 1, "number of trainable parameters (elements, not tensors)")
def _check_trainable_count(n_trainable: Any, model: Any) -> CheckResult:
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    if isinstance(n_trainable, torch.Tensor) and n_trainable.numel() == 1:
        n_trainable = n_trainable.item()
    if isinstance(n_trainable, bool) or not isinstance(n_trainable, (int, float)) or n_trainable != n_trainable:
        return fail(
            f"n_trainable should be a number (an int), got {type(n_trainable).__name__}: sum p.numel() over the "
            "trainable parameters.",
            mistake="count_not_a_number",
        )
    if float(n_trainable) != int(n_trainable):
        if abs(float(n_trainable) * 1e6 - trainable) < 0.01 * trainable:
            return fail(
                f"{n_trainable} looks like the count in millions: n_trainable should be the number itself "
                f"({trainable:,}), not rounded or scaled.",
                mistake="count_scaled",
            )
        return fail(f"Expected a whole number of parameters ({trainable:,}), got {n_trainable}.", mistake="count_wrong")
    n = int(n_trainable)
    if n == trainable:
        return ok(f"{n:,} trainable parameters.")
    if n == sum(p.numel() for p in params):
        return fail(
            "That is the total number of parameters; count only those with requires_grad=True.",
            mistake="count_total",
        )
    if n == sum(p.numel() for p in params if not p.requires_grad):
        return fail(
            "That counts the frozen parameters (requires_grad=False); count those with requires_grad=True.",
            mistake="count_frozen",
        )
    if n == sum(1 for p in params if p.requires_grad):
        return fail(
            "That counts tensors, not numbers: sum p.numel() over the trainable parameters.", mistake="count_tensors"
        )
    if n == sum(p.numel() for p in params if p.requires_grad and p.ndim > 1):
        return fail(
            f"{n:,} counts the weight matrices only: the biases are trainable parameters too "
            f"(expected {trainable:,}). Sum p.numel() over every parameter with requires_grad=True.",
            mistake="count_weights_only",
        )
    if n == sum(t.numel() for t in model.state_dict().values()):
        return fail(
            "That counts everything in the state_dict, buffers such as BatchNorm's running statistics too; "
            "count the parameters with requires_grad=True.",
            mistake="count_buffers",
        )
    return fail(f"Expected {trainable:,} trainable parameters, got {n:,}.", mistake="count_wrong")


@register("optimizer_params", 2, "the optimizer holds exactly the trainable parameters")
def _check_optimizer_params(optimizer: Any, model: Any) -> CheckResult:
    if not isinstance(optimizer, torch.optim.Optimizer):
        return fail(
            f"optimizer should be a torch.optim optimizer (e.g. torch.optim.AdamW(params, lr=lr)), got "
            f"{type(optimizer).__name__}: build the optimizer from the list of trainable parameters.",
            mistake="not_an_optimizer",
        )
    problem = optimizer_vs_trainable(optimizer, model)
    if problem:
        return problem
    n = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    return ok(f"The optimizer holds exactly the {n:,} trainable parameters.")


# ----------------------------------------------------------------------------- hints (exercises of 03)

exercise(
    "freeze_backbone",
    "Every parameter of the backbone must stop learning, and the head's must keep learning. A "
    "parameter learns when it has requires_grad=True.",
    "model.parameters() / model.named_parameters() give every parameter; model.get_classifier() "
    "is the head of a timm model. A module has no requires_grad flag of its own: its parameters do.",
    "for p in model.parameters():\n    p.requires_grad = ...\nfor p in <the head>.parameters():\n"
    "    p.requires_grad = ...",
)
exercise(
    "bn_frozen",
    "In train mode a BatchNorm layer normalises each batch with that batch's own statistics and updates "
    "running_mean/running_var, whatever requires_grad says, and fit() calls model.train() every epoch. The "
    "frozen BN layers must stay in eval mode even after that, so they normalise with the pretrained "
    "statistics (stopping the statistics from moving, e.g. momentum 0, is not enough).",
    "isinstance(m, nn.BatchNorm2d) finds them in model.modules(); module.register_forward_pre_hook(fn) "
    "calls fn(module, inputs) before every forward; overriding model.train is the other way.",
    "def keep_eval(module, inputs):\n    ...  # switch *this* module to eval mode; return nothing\n"
    "for m in model.modules():\n    if isinstance(m, nn.BatchNorm2d):\n        m.register_forward_pre_hook(...)",
)
exercise(
    "trainable_count",
    "Count numbers (elements), not tensors, and only those that will train.",
    "p.numel() is the number of elements of a tensor; p.requires_grad says whether it trains.",
    "n_trainable = sum(... for p in model.parameters() if ...)",
)
exercise(
    "optimizer_params",
    "The optimizer should receive exactly the parameters that train: not the frozen ones, and none "
    "left out. Give it a list, not a generator that something else may already have used up.",
    "torch.optim.AdamW(params, lr=lr) takes any list of tensors; p.requires_grad tells which ones train.",
    "params = [p for p in model.parameters() if ...]\noptimizer = torch.optim.AdamW(..., lr=lr)",
)
