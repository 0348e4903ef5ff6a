"""Checks of fine-tuning: learning rates for the backbone and the head."""

from __future__ import annotations

from typing import Any

from tl_helpers.checks.core import (
    CheckResult,
    fail,
    fmt,
    head_parameter_ids,
    ok,
    optimizer_kind,
    optimizer_param_ids,
    optimizer_vs_trainable,
    register,
)

__all__: list[str] = []  # checks register themselves in CHECKS; nothing else is public

_MAX_LR = {"adam": 1e-2, "sgd": 0.1}
_MIN_LR = 1e-6


@register("fine_tune_lr", 2, "a learning rate suitable for fine-tuning the pretrained backbone")
def _check_fine_tune_lr(optimizer: Any, model: Any) -> CheckResult:
    optimizer_param_ids(optimizer)
    head = head_parameter_ids(model)
    backbone_lrs = [float(g["lr"]) for g in optimizer.param_groups if any(id(p) not in head for p in g["params"])]
    if not any(g["params"] for g in optimizer.param_groups):
        return optimizer_vs_trainable(optimizer, model) or fail("empty optimizer")
    if not backbone_lrs:
        return fail("This optimizer only trains the head: fine-tuning also updates the backbone.")
    kind = optimizer_kind(optimizer)
    top, low = max(backbone_lrs), min(backbone_lrs)
    if top > _MAX_LR[kind]:
        return fail(
            f"Learning rate far too high for fine-tuning: {fmt(top)} on pretrained layers would wreck the "
            f"pretrained features. With {type(optimizer).__name__} use about "
            f"{'1e-4 to 1e-3' if kind == 'adam' else '1e-3 to 1e-2'} for the backbone."
        )
    if low < _MIN_LR:
        return fail(f"Learning rate {fmt(low)} is so low the backbone will barely change; try 1e-4.")
    return ok(
        f"Backbone learning rate {fmt(top)} with {type(optimizer).__name__}: small enough to keep the "
        "pretrained features."
    )


@register("discriminative_lr", 2, "head learns faster than the backbone; every trainable parameter included")
def _check_discriminative_lr(optimizer: Any, model: Any) -> CheckResult:
    problem = optimizer_vs_trainable(optimizer, model)
    if problem:
        return problem
    head = head_parameter_ids(model)
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
            f"The backbone's learning rate ({fmt(max(back_lrs))}) is not below the head's "
            f"({fmt(min(head_lrs))}): it is the other way round — the new head learns fast, the pretrained "
            "layers slowly."
        )
    return ok(f"Head lr {fmt(min(head_lrs))}, backbone lr up to {fmt(max(back_lrs))}.")
