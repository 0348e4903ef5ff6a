"""Checks of freezing: requires_grad, BatchNorm statistics, trainable counts, the optimizer's parameters."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from tl_helpers.checks.core import (
    CheckResult,
    batchnorms,
    fail,
    head_parameter_ids,
    ok,
    optimizer_vs_trainable,
    probe_images,
    register,
)

__all__: list[str] = []  # checks register themselves in CHECKS; nothing else is public


@register("freeze_backbone", 3, "every backbone parameter frozen, the head trainable")
def _check_freeze_backbone(model: Any) -> CheckResult:
    if not isinstance(model, nn.Module):
        return fail(f"Expected an nn.Module, got {type(model).__name__}.")
    head = head_parameter_ids(model)
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


@register("bn_frozen", 2, "BatchNorm running statistics do not change in train mode")
def _check_bn_frozen(model: Any) -> CheckResult:
    model = copy.deepcopy(model).cpu().float()
    bns = batchnorms(model)
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
        model(probe_images(4))
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


@register("trainable_count", 1, "number of trainable parameters (elements, not tensors)")
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


@register("optimizer_params", 2, "the optimizer holds exactly the trainable parameters")
def _check_optimizer_params(optimizer: Any, model: Any) -> CheckResult:
    problem = optimizer_vs_trainable(optimizer, model)
    if problem:
        return problem
    n = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    return ok(f"The optimizer holds exactly the {n:,} trainable parameters.")
