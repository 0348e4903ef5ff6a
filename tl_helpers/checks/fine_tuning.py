"""Checks of fine-tuning: a training step, the LR range test and its reading, two phases, learning rates.

The learner's own functions are run on a tiny convolutional classifier (:class:`TinyClassifier`, a few
hundred parameters, 8 x 8 images) so that each check takes milliseconds and can compare what the
function did with what one correct step would do. The accepted learning rates come from the
measurements of notebook 05 (see the constants below).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from tl_helpers.checks.core import (
    CheckResult,
    fail,
    fmt,
    head_parameter_ids,
    is_finite_number,
    learner_error,
    ok,
    optimizer_kind,
    optimizer_param_ids,
    optimizer_vs_trainable,
    register,
)
from tl_helpers.checks.registry import exercise

__all__ = ["ADAMW_LR_RANGE", "SGD_LR_RANGE", "TinyClassifier", "curve_problem", "read_curve", "tiny_batches"]

# Backbone learning rates accepted for fine-tuning, (lowest, highest), from notebook 05's backbone
# sweep: the head held at 1e-3, only the backbone's peak rate changed (AdamW, 45 steps, warm-up +
# cosine, BatchNorm on its pretrained statistics, 3 seeds). What the notebook asserts: 1e-4, 3e-4 and
# 1e-3 end above every seed of the frozen backbone, 1e-5 moves the backbone by less than 0.1 % and ends
# below 1e-4, 2e-3 ends more than five points below the best rate, 1e-2 at chance. Every measured rate
# inside the range ends within four points of the best mean (or the reference seeds' spread); the
# notebook asserts exactly that against this constant, so a change here that the measurements do not
# support fails there. The range is for the backbone's top rate: discriminative rates (notebook 05's
# 0.73 per layer group) take the lower groups below it on purpose (the stem to about 6e-5).
ADAMW_LR_RANGE = (1e-4, 1e-3)
# SGD (with or without momentum) takes steps proportional to the gradient, much smaller than Adam's
# at the same lr; notebook 05 does not measure it. The range follows the common recipes: the PyTorch
# transfer-learning tutorial fine-tunes with SGD at 1e-3 (momentum 0.9), inside; 0.1, the usual rate
# for training ImageNet models from scratch with SGD, is rejected; 1e-4 is the floor.
SGD_LR_RANGE = (1e-4, 5e-2)
_RANGES = {"adam": ADAMW_LR_RANGE, "sgd": SGD_LR_RANGE}
_WHERE = (
    "(the range comes from notebook 05's backbone sweep, the head held at 1e-3, 45 steps: 1e-4, 3e-4 and 1e-3 "
    "ended above every run with a frozen backbone, 1e-5 barely moved the backbone and ended below 1e-4, 2e-3 ended "
    "more than five points below the best and 1e-2 at chance)"
)


# ----------------------------------------------------------------------------- a tiny model for behaviour


class TinyClassifier(nn.Module):
    """A tiny conv net with a BatchNorm, a ``classifier`` head and timm's ``get_classifier()``.

    Args:
        num_classes: Outputs of the head.
        seed: Seed of the initial weights.
    """

    def __init__(self, num_classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(8, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def get_classifier(self) -> nn.Module:
        """The head (as timm models expose it)."""
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""
        return self.classifier(self.features(x))


def tiny_batches(n: int, batch_size: int = 16, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` learnable batches for :class:`TinyClassifier`: the label is the brightest colour channel."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(batch_size, 3, 8, 8, generator=g)
        y = torch.randint(0, 4, (batch_size,), generator=g)
        x[torch.arange(batch_size), y.clamp_max(2)] += 1.5 * (y < 3).float()[:, None, None]
        out.append((x, y))
    return out


def _device(device: Any) -> torch.device:
    try:
        return torch.device(device) if device is not None else torch.device("cpu")
    except (TypeError, RuntimeError):
        return torch.device("cpu")


def _values(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], names: list[str]) -> list[str]:
    return [n for n in names if not torch.equal(before[n], after[n])]


def _reference_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], optimizer: Any) -> float:
    model.train()
    x, y = batch
    device = next(model.parameters()).device
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
    loss.backward()
    optimizer.step()
    return float(loss.detach())


# ----------------------------------------------------------------------------- 1. one training step


@register("train_step", 3, "one training step: train mode, zeroed gradients, forward, loss, backward, step")
def _check_train_step(train_step: Any, device: Any = None) -> CheckResult:
    if not callable(train_step):
        return fail("Pass your train_step function itself (train_step, without calling it).", mistake="not_a_function")
    dev = _device(device)
    net = TinyClassifier().to(dev)
    frozen = [n for n, _ in net.named_parameters() if n.startswith("features.0.")]
    for n, p in net.named_parameters():
        p.requires_grad = n not in frozen
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    ref = copy.deepcopy(net)
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    ref_optimizer = torch.optim.SGD([p for p in ref.parameters() if p.requires_grad], lr=0.1)
    batches = tiny_batches(2)
    net.eval()  # a step must switch to train mode itself (evaluation may have left the model in eval mode)
    bn = net.features[1]
    bn_before = bn.running_mean.clone()
    before = _values(net)
    try:
        loss = train_step(net, batches[0], optimizer)
    except Exception as exc:
        return learner_error(exc, "train_step")
    after = _values(net)
    ref_loss = _reference_step(ref, batches[0], ref_optimizer)
    if loss is None:
        return fail(
            "train_step returned nothing: return the batch's loss (loss.item()), to record the curve.",
            mistake="no_loss_returned",
        )
    if not is_finite_number(loss):
        return fail(
            f"train_step must return the loss as a number (loss.item()), got {type(loss).__name__}.",
            mistake="loss_not_a_number",
        )
    if _changed(before, after, frozen):
        return fail(
            "A frozen parameter changed: the step must update only what the optimizer it is given holds "
            "(do not set requires_grad=True or build a new optimizer inside train_step).",
            mistake="frozen_param_changed",
        )
    if not _changed(before, after, trainable):
        grads = [p.grad for n, p in net.named_parameters() if n in trainable]
        if any(g is not None and bool(g.abs().sum() > 0) for g in grads):
            return fail(
                "The parameters did not move, yet gradients are there after the step: optimizer.step() ran "
                "before loss.backward(), so it used no gradient (and the next step would use this batch's "
                "stale one). Order: zero_grad, forward, loss, backward, step.",
                mistake="step_before_backward",
            )
        return fail(
            "The parameters did not move: no gradient reached optimizer.step(). Call loss.backward() "
            "before optimizer.step() (and zero the gradients before the backward pass, not between "
            "backward and step).",
            mistake="no_backward",
        )
    if torch.equal(bn.running_mean, bn_before):
        return fail(
            "The forward pass ran in eval mode (BatchNorm statistics did not update, Dropout would be "
            "off): call model.train() at the start of train_step — an evaluation may have left the "
            "model in eval mode.",
            mistake="step_in_eval_mode",
        )
    if abs(float(loss) - ref_loss) > 1e-4 * max(1.0, abs(ref_loss)):
        return fail(
            f"train_step returned {float(loss):.4f}, but the cross-entropy of this batch before the step "
            f"is {ref_loss:.4f}: return loss.item() of nn.functional.cross_entropy(model(x), y).",
            mistake="wrong_loss_returned",
        )
    if not all(torch.allclose(after[n], p.detach(), atol=1e-5, rtol=1e-4) for n, p in ref.named_parameters()):
        return fail(
            "The update differs from one optimizer.step() of the optimizer passed in: use that optimizer "
            "(not a new one) and make exactly one step per call.",
            mistake="wrong_update",
        )
    grad_1 = {n: p.grad.detach().clone() for n, p in ref.named_parameters() if p.grad is not None}
    try:
        train_step(net, batches[1], optimizer)
    except Exception as exc:
        return learner_error(exc, "train_step")
    _reference_step(ref, batches[1], ref_optimizer)
    if not all(
        torch.allclose(p.detach(), q.detach(), atol=1e-5, rtol=1e-4) for p, q in zip(net.parameters(), ref.parameters())
    ):
        accumulated = all(
            p.grad is not None and torch.allclose(p.grad, q.grad + grad_1[n], atol=1e-5, rtol=1e-4)
            for (n, p), q in zip(net.named_parameters(), ref.parameters())
            if n in grad_1 and q.grad is not None
        )
        if accumulated:
            return fail(
                "The gradients were not zeroed: the second step used the sum of both batches' gradients "
                "(PyTorch adds into .grad). Call optimizer.zero_grad() in every step, before backward().",
                mistake="grad_not_zeroed",
            )
        return fail(
            "The second step differs from a correct one: zero the gradients at every step, then backward, step.",
            mistake="wrong_second_step",
        )
    return ok("train mode, gradients zeroed, forward, loss, backward, step; frozen weights untouched.")


exercise(
    "train_step",
    "One step of gradient descent on one batch: the model in train mode, the old gradients cleared, the loss of "
    "this batch computed, its gradients computed, then the optimizer moves the weights once. Return the loss.",
    "model.train(); optimizer.zero_grad(); nn.functional.cross_entropy(logits, y); loss.backward(); "
    "optimizer.step(); loss.item(). Move the batch to the model's device first (x.to(device)).",
    "def train_step(model, batch, optimizer):\n    model.train()\n    x, y = (t.to(device) for t in batch)\n"
    "    optimizer.zero_grad()\n    loss = ...  # cross-entropy of model(x) against y\n    ...  # backward, then step\n"
    "    return loss.item()",
)


# ----------------------------------------------------------------------------- 2. the LR range test


def _as_curve(lrs: Any, losses: Any) -> tuple[list[float], list[float]]:
    lr_list = [float(x) for x in lrs]
    loss_list = [float(x) for x in losses]
    return lr_list, loss_list


def curve_problem(lrs: list[float], losses: list[float]) -> CheckResult | None:
    """What is wrong with a recorded range-test curve as a curve (None when it is usable)."""
    if len(lrs) != len(losses):
        return fail(
            f"{len(lrs)} learning rates but {len(losses)} losses: record one of each per step.",
            mistake="curve_lengths_differ",
        )
    if len(lrs) < 3:
        return fail(
            f"The curve has {len(lrs)} point(s): the test stopped far too early. Stop only once the loss "
            "has blown up (e.g. above 4 x the lowest loss so far, or not finite).",
            mistake="curve_too_short",
        )
    if not all(b > a for a, b in zip(lrs, lrs[1:])):
        return fail(
            "The learning rate must grow at every step of a range test (from lr_min towards lr_max).",
            mistake="lr_not_increasing",
        )
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    mean = sum(ratios) / len(ratios)
    if max(abs(r - mean) for r in ratios) > 0.01 * mean:
        diffs = [b - a for a, b in zip(lrs, lrs[1:])]
        dmean = sum(diffs) / len(diffs)
        if max(abs(d - dmean) for d in diffs) <= 0.01 * abs(dmean):
            return fail(
                "The learning rate grows linearly (the same amount added each step): a range test spans "
                "several orders of magnitude, so it must grow exponentially — multiplied by the same factor "
                "each step, lr = lr_min * (lr_max / lr_min) ** (step / (num_steps - 1)).",
                mistake="lr_linear",
            )
        return fail(
            "The learning rate does not grow by the same factor every step: use "
            "lr = lr_min * (lr_max / lr_min) ** (step / (num_steps - 1)).",
            mistake="lr_not_geometric",
        )
    if not any(math.isfinite(x) for x in losses):
        return fail("No finite loss recorded at all.", mistake="no_finite_loss")
    return None


@register(
    "lr_range_test", 3, "an LR range test: exponentially growing lr per step, the loss recorded, stop at divergence"
)
def _check_lr_range_test(lr_range_test: Any, device: Any = None) -> CheckResult:
    if not callable(lr_range_test):
        return fail(
            "Pass your lr_range_test function itself (lr_range_test, without calling it).", mistake="not_a_function"
        )
    dev = _device(device)
    net = TinyClassifier().to(dev)
    batches = tiny_batches(30)
    ref = copy.deepcopy(net).train()
    with torch.no_grad():
        first = float(nn.functional.cross_entropy(ref(batches[0][0].to(dev)), batches[0][1].to(dev)))
    lr_min, lr_max, num_steps = 1e-4, 100.0, 30
    try:
        result = lr_range_test(net, batches, lr_min, lr_max, num_steps)
    except Exception as exc:
        return learner_error(exc, "lr_range_test")
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return fail("lr_range_test must return two lists: (lrs, losses), one entry per step.", mistake="wrong_return")
    try:
        lrs, losses = _as_curve(*result)
    except (TypeError, ValueError):
        return fail("lr_range_test must return (lrs, losses): two lists of numbers.", mistake="wrong_return")
    problem = curve_problem(lrs, losses)
    if problem:
        return problem
    ratio = (lr_max / lr_min) ** (1 / (num_steps - 1))
    if not lr_min / 1.01 <= lrs[0] <= lr_min * ratio * 1.01:
        return fail(
            f"The test must start at lr_min ({fmt(lr_min)}); yours started at {fmt(lrs[0])}.", mistake="wrong_start_lr"
        )
    step_ratio = lrs[1] / lrs[0]
    if not (lr_max / lr_min) ** (1 / num_steps) / 1.01 <= step_ratio <= ratio * 1.01:
        return fail(
            f"The learning rate grows by x{step_ratio:.3g} per step; to go from lr_min to lr_max in num_steps "
            f"steps it must grow by (lr_max / lr_min) ** (1 / (num_steps - 1)) = x{ratio:.3g}.",
            mistake="wrong_lr_factor",
        )
    if abs(losses[0] - first) > 0.25 * first:
        return fail(
            f"The first recorded loss ({losses[0]:.3g}) is not the training loss of the first batch "
            f"({first:.3g}): record each step's loss (what train_step returns).",
            mistake="wrong_loss_recorded",
        )
    finite = [x for x in losses if math.isfinite(x)]
    low = min(finite)
    diverged = not math.isfinite(losses[-1]) or losses[-1] > 2 * low
    if len(lrs) >= num_steps:
        if any(not math.isfinite(x) or x > 4 * low for x in losses):
            return fail(
                "The test never stopped: it ran all num_steps steps although the loss had blown up. Stop "
                "(break) as soon as the loss diverges, e.g. above 4 x the lowest loss so far or not finite — "
                "the steps past that point only waste time.",
                mistake="never_stops",
            )
        return fail(
            f"The loss never blew up, even at lr = {fmt(lrs[-1])} on a tiny model: the learning rate you "
            "record is probably not the one the optimizer uses. Set it before every step: "
            "for group in optimizer.param_groups: group['lr'] = lr.",
            mistake="lr_not_applied",
        )
    if not diverged:
        return fail(
            f"The test stopped after {len(lrs)} steps although the loss had not diverged (last {losses[-1]:.3g}, "
            f"lowest {low:.3g}): stop only once it blows up, e.g. above 4 x the lowest loss so far.",
            mistake="stopped_early",
        )
    return ok(
        f"Exponential steps of x{step_ratio:.3g} from {fmt(lrs[0])}, stopped at divergence after {len(lrs)} steps."
    )


exercise(
    "lr_range_test",
    "Train for a few dozen steps with a learning rate that starts tiny and is multiplied by the same factor "
    "every step; record (lr, loss) at each step and stop as soon as the loss blows up.",
    "Set the rate with `for group in optimizer.param_groups: group['lr'] = lr` before each step; reuse your "
    "train_step; restart the loader when it runs out (itertools.cycle(loader) or a fresh iter()).",
    "lr = lr_min * (lr_max / lr_min) ** (step / (num_steps - 1))\n...  # set it on every param group, then\n"
    "loss = train_step(model, next(batches), optimizer)\nlrs.append(lr); losses.append(loss)\n"
    "if not math.isfinite(loss) or loss > 4 * min(losses):\n    ...  # diverged: stop",
)


# ----------------------------------------------------------------------------- 3. reading the curve


def read_curve(lrs: list[float], losses: list[float]) -> dict[str, float]:
    """The landmarks of a range-test curve: the lr at the lowest loss, the steepest descent, divergence.

    Returns:
        ``lr_at_min``, ``steepest`` (the lr where the loss falls fastest per factor of lr, before the
        minimum), ``diverges`` (the first lr past the minimum with a loss above twice the lowest, or
        not finite; else the last lr) and ``falls_from`` (where the flat start ends).
    """
    finite = [(lr, x) for lr, x in zip(lrs, losses) if math.isfinite(x)]
    i_min = min(range(len(finite)), key=lambda i: finite[i][1])
    lr_at_min, low = finite[i_min]
    diverge = next(
        (lr for lr, x in zip(lrs, losses) if lr > lr_at_min and (not math.isfinite(x) or x > 2 * low)), lrs[-1]
    )
    before = finite[: i_min + 1]
    steepest = lr_at_min / 10
    if len(before) >= 3:
        slopes = [
            ((before[i + 1][1] - before[i - 1][1]) / math.log(before[i + 1][0] / before[i - 1][0]), before[i][0])
            for i in range(1, len(before) - 1)
        ]
        steepest = min(slopes)[1]
    drop = finite[0][1] - low  # the flat start ends once the loss has fallen a tenth of the way to its minimum
    falls_from = next((lr for lr, x in before if x < finite[0][1] - 0.1 * drop), lr_at_min)
    return {"lr_at_min": lr_at_min, "steepest": steepest, "diverges": diverge, "falls_from": falls_from}


SMOOTHING = 0.8  # notebook 05's range test: smoothed = 0.8 * smoothed + 0.2 * loss, from the first loss


def smooth_curve(losses: list[float], smoothing: float = SMOOTHING) -> list[float]:
    """The exponential moving average notebook 05 records (no bias correction; non-finite losses stay)."""
    out: list[float] = []
    level: float | None = None
    for x in losses:
        if not math.isfinite(x):
            out.append(x)
            continue
        level = x if level is None else smoothing * level + (1 - smoothing) * x
        out.append(level)
    return out


def _steepest_points(lrs: list[float], losses: list[float], stop: int) -> list[float]:
    """The steepest-descent lr of ``losses`` before index ``stop``, as common ways of computing it find it.

    Central differences over log lr (np.gradient), and forward differences (np.diff: either end of the
    steepest segment).
    """
    pts = [(lr, x) for lr, x in zip(lrs[: stop + 1], losses[: stop + 1]) if math.isfinite(x)]
    found: list[float] = []
    if len(pts) >= 3:
        central = [
            ((pts[i + 1][1] - pts[i - 1][1]) / math.log(pts[i + 1][0] / pts[i - 1][0]), pts[i][0])
            for i in range(1, len(pts) - 1)
        ]
        found.append(min(central)[1])
    if len(pts) >= 2:
        forward = min(
            range(len(pts) - 1), key=lambda i: (pts[i + 1][1] - pts[i][1]) / math.log(pts[i + 1][0] / pts[i][0])
        )
        found += [pts[forward][0], pts[forward + 1][0]]
    return found


@register(
    "range_test_lr",
    3,
    "a fine-tuning lr read from your own LR range test (notebook 05's rule): from the steepest descent of the "
    "smoothed loss to a tenth of the lr at its minimum",
)
def _check_range_test_lr(chosen_lr: Any, lrs: Any, losses: Any) -> CheckResult:
    if not is_finite_number(chosen_lr) or float(chosen_lr) <= 0:
        return fail("chosen_lr must be a positive number read from your curve.", mistake="lr_not_a_number")
    try:
        lr_list, loss_list = _as_curve(lrs, losses)
    except (TypeError, ValueError):
        return fail("Pass the curve your lr_range_test returned: (range_lrs, range_losses).", mistake="not_a_curve")
    problem = curve_problem(lr_list, loss_list)
    if problem:
        return fail("Your range-test curve cannot be read: " + problem.feedback, mistake="curve_unreadable")
    lr = float(chosen_lr)
    raw = read_curve(lr_list, loss_list)
    smoothed_losses = smooth_curve(loss_list)
    smooth = read_curve(lr_list, smoothed_losses)
    at_min, diverges = raw["lr_at_min"], raw["diverges"]
    i_raw = lr_list.index(at_min)
    i_smooth = lr_list.index(smooth["lr_at_min"])
    steep_raw = [x for x in _steepest_points(lr_list, loss_list, i_raw) if x < at_min]
    steep_smooth = [x for x in _steepest_points(lr_list, smoothed_losses, i_smooth) if x < at_min]
    tenths = [at_min / 10, smooth["lr_at_min"] / 10]
    named = tenths + steep_smooth  # the notebook's rule(s), read on the smoothed curve (and the tenth on yours)
    low = max(smooth["falls_from"], min(named + steep_raw) / 10)
    high = max([at_min / 3] + steep_raw + steep_smooth)
    step = (lr_list[-1] / lr_list[0]) ** (1 / max(1, len(lr_list) - 1))
    near = math.sqrt(step)  # within half a step of the lrs of the curve: a reading of it

    def close(a: float, b: float) -> bool:
        return b / near <= a <= b * near

    rule = (
        f"rule applied (notebook 05's): your loss smoothed as notebook 05 does (each point {SMOOTHING} x the "
        f"previous + {1 - SMOOTHING:.1f} x the new loss), then a tenth of the lr at the lowest loss "
        f"({fmt(at_min / 10)} on your curve), or the steepest descent before it (smoothed: "
        f"{', '.join(sorted({fmt(x) for x in steep_smooth})) or 'none'}; as recorded: "
        f"{', '.join(sorted({fmt(x) for x in steep_raw})) or 'none'}); accepted: {fmt(low)} to {fmt(high)}, "
        f"below the minimum at {fmt(at_min)} (divergence from {fmt(diverges)})"
    )
    if lr >= diverges:
        return fail(
            f"lr {fmt(lr)} is past the divergence point of your curve, where the loss blows up ({rule}).",
            mistake="lr_past_divergence",
        )
    if lr >= at_min / near:
        return fail(
            f"lr {fmt(lr)} is at or past the minimum of your curve, the edge of divergence ({rule}): take about "
            "a tenth of the lr at the minimum, where the loss is still falling steadily.",
            mistake="lr_at_minimum",
        )
    if any(close(lr, x) for x in named + [x for x in steep_raw if x >= low]):
        return ok(f"lr {fmt(lr)} is one of the readings the rule gives ({rule}).")
    if lr > high:
        return fail(
            f"lr {fmt(lr)} is too close to the minimum of your curve ({rule}): near the minimum the loss is "
            "about to blow up. Take about a tenth of the lr at the minimum, or the steepest descent.",
            mistake="lr_near_minimum",
        )
    if lr < low:
        return fail(
            f"lr {fmt(lr)} is on the flat start of your curve, where the steps are too small to matter ({rule}): "
            "pick where the loss falls fastest, or a tenth of the lr at the minimum.",
            mistake="lr_flat_start",
        )
    return ok(f"lr {fmt(lr)}: inside the range the rule accepts ({rule}).")


exercise(
    "range_test_lr",
    "Read your own plot: the loss is flat while the steps are too small, falls, reaches a minimum, then explodes. "
    "A good fine-tuning rate lies well below the minimum, where the loss is still falling steadily.",
    "Find the lr at the lowest loss of your curve (range_lrs[argmin of range_losses]); the common rules take a "
    "tenth of it, or the lr where the curve falls most steeply.",
    "lr_at_min = range_lrs[int(np.argmin(range_losses))]\nchosen_lr = ...  # a tenth of it, or the steepest part",
)


# ----------------------------------------------------------------------------- 4. the two-phase schedule


class _RecordingLoader:
    """A loader over fixed batches that records every parameter and requires_grad at each new pass."""

    def __init__(self, model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.model, self.batches = model, batches
        self.snapshots: list[dict[str, torch.Tensor]] = []
        self.trainable: list[set[str]] = []

    def __iter__(self):
        self.snapshots.append(_values(self.model))
        self.trainable.append({n for n, p in self.model.named_parameters() if p.requires_grad})
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _group_lr(group: dict) -> float:
    return float(group.get("initial_lr", group["lr"]))  # a scheduler may have decayed "lr" to 0 by the end


@register("two_phase", 3, "phase 1 trains the head on a frozen backbone; phase 2 everything at a low lr")
def _check_two_phase(two_phase: Any, device: Any = None) -> CheckResult:
    if not callable(two_phase):
        return fail("Pass your two_phase function itself (two_phase, without calling it).", mistake="not_a_function")
    dev = _device(device)
    net = TinyClassifier().to(dev)
    head_names = [n for n, _ in net.named_parameters() if n.startswith("classifier.")]
    back_names = [n for n, _ in net.named_parameters() if n not in head_names]
    loader = _RecordingLoader(net, tiny_batches(3))
    head_lr, low_lr, head_epochs, full_epochs = 1e-2, 1e-3, 2, 2
    try:
        result = two_phase(net, loader, head_lr, low_lr, head_epochs, full_epochs)
    except Exception as exc:
        if not any(p.requires_grad for p in net.parameters()):
            return fail(
                f"Everything was frozen, the head too ({type(exc).__name__}: {exc}): phase 1 freezes the "
                "backbone and trains the head, so set requires_grad=True again on the head's parameters.",
                mistake="head_frozen",
            )
        return learner_error(exc, "two_phase")
    if not (isinstance(result, (tuple, list)) and len(result) == 2) or not all(
        isinstance(o, torch.optim.Optimizer) for o in result
    ):
        return fail(
            "two_phase must return the optimizers of both phases: (head_optimizer, full_optimizer).",
            mistake="wrong_return",
        )
    head_opt, full_opt = result
    passes = len(loader.snapshots)
    if passes != head_epochs + full_epochs:
        return fail(
            f"The loader was iterated {passes} times; with head_epochs={head_epochs} and full_epochs={full_epochs} "
            "expect one pass per epoch of each phase.",
            mistake="wrong_number_of_epochs",
        )
    start, middle, end = loader.snapshots[0], loader.snapshots[head_epochs], _values(net)
    if _changed(start, middle, back_names):
        return fail(
            "Phase 1 trained the backbone too: freeze it first (requires_grad=False on every parameter but "
            "the head's), so that the random head's first large gradients cannot damage the pretrained layers.",
            mistake="phase1_backbone_trained",
        )
    if not _changed(start, middle, head_names):
        return fail(
            "In phase 1 the head did not learn: it was frozen along with the backbone (or left out of the "
            "optimizer). Phase 1 trains the head, and only the head.",
            mistake="phase1_head_not_trained",
        )
    head_ids = {id(p) for n, p in net.named_parameters() if n in head_names}
    back_ids = {id(p) for n, p in net.named_parameters() if n in back_names}
    phase2_trainable = loader.trainable[head_epochs] if len(loader.trainable) > head_epochs else set()
    unfrozen = all(n in phase2_trainable for n in back_names)
    if full_opt is head_opt:
        return fail(
            "Phase 2 reuses phase 1's optimizer"
            + (
                ", which holds only the head: the backbone is in no optimizer, so it never trains, unfrozen or not. "
                if not back_ids & set(optimizer_param_ids(full_opt))
                else " (with the backbone added to it, and its learning rate changed along the way). "
            )
            + "Build a new optimizer over every parameter at low_lr for phase 2 and return both.",
            mistake="phase2_reuses_head_optimizer",
        )
    in_full = set(optimizer_param_ids(full_opt))
    if any(i not in head_ids for i in optimizer_param_ids(head_opt)):
        return fail(
            "Phase 1's optimizer holds the frozen backbone's parameters: give it only the head's "
            "(model.get_classifier().parameters()).",
            mistake="phase1_optimizer_has_backbone",
        )
    used = sorted({_group_lr(g) for g in head_opt.param_groups})
    if used != [head_lr]:
        return fail(
            f"Phase 1 trained the head at lr {', '.join(map(fmt, used))}, not at head_lr ({fmt(head_lr)}).",
            mistake="phase1_wrong_lr",
        )
    if not unfrozen and not _changed(middle, end, back_names):
        return fail(
            "The backbone was never unfrozen: at the start of phase 2 its parameters still have "
            "requires_grad=False, so it cannot train. Set requires_grad=True on every parameter before "
            "building phase 2's optimizer.",
            mistake="backbone_never_unfrozen",
        )
    missing = [n for n, p in net.named_parameters() if n in back_names and id(p) not in in_full]
    if missing and len(missing) == len(back_names):
        return fail(
            "The backbone was unfrozen (requires_grad=True) but it is in no optimizer: phase 2's optimizer holds "
            "only the head, so the backbone never moves. Build phase 2's optimizer over every parameter "
            "(model.parameters()), after unfreezing.",
            mistake="backbone_not_in_phase2_optimizer",
        )
    if missing:
        return fail(
            f"Phase 2's optimizer leaves out {len(missing)} of {len(back_names)} backbone tensors (e.g. "
            f"{missing[0]}): build it over every parameter, after unfreezing all of them.",
            mistake="phase2_optimizer_partial",
        )
    if not _changed(middle, end, back_names):
        return fail(
            "The backbone did not change in phase 2 although it is in phase 2's optimizer: train with that "
            "optimizer (your train_step with full_optimizer) for full_epochs passes.",
            mistake="phase2_not_trained",
        )
    if not any(i in in_full for i in head_ids) or not _changed(middle, end, head_names):
        return fail(
            "The head stopped learning in phase 2: the phase-2 optimizer must hold every parameter, the "
            "head's too (and the head must stay trainable).",
            mistake="phase2_head_left_out",
        )
    back_lrs = [_group_lr(g) for g in full_opt.param_groups if any(id(p) not in head_ids for p in g["params"])]
    if max(back_lrs) > low_lr * 1.0001:
        return fail(
            f"Phase 2 trained the pretrained backbone at lr {fmt(max(back_lrs))}, not at the low lr ({fmt(low_lr)}): "
            "the whole point of phase 2 is small steps for the pretrained layers.",
            mistake="phase2_lr_too_high",
        )
    return ok(
        f"Phase 1: head only at {fmt(head_lr)} on a frozen backbone; phase 2: everything, backbone at "
        f"{fmt(max(back_lrs))}."
    )


exercise(
    "two_phase",
    "Phase 1: freeze the whole backbone, train only the new head (its random weights would otherwise send large "
    "gradients into the pretrained layers). Phase 2: unfreeze everything and train it all at a low learning rate.",
    "requires_grad on model.parameters() and on model.get_classifier().parameters(); one new optimizer per "
    "phase, each over the parameters that phase trains; your train_step for every batch of every epoch.",
    "for p in model.parameters(): p.requires_grad = False\nfor p in model.get_classifier().parameters(): ...\n"
    "head_optimizer = torch.optim.AdamW(..., lr=head_lr)\n...  # head_epochs passes over the loader\n"
    "...  # unfreeze everything, full_optimizer at low_lr, full_epochs passes\nreturn head_optimizer, full_optimizer",
)


# ----------------------------------------------------------------------------- learning rates


@register("fine_tune_lr", 2, "a learning rate suitable for fine-tuning the pretrained backbone")
def _check_fine_tune_lr(optimizer: Any, model: Any) -> CheckResult:
    if not isinstance(optimizer, torch.optim.Optimizer):
        return fail(
            f"Pass the phase-2 optimizer (a torch.optim optimizer), got {type(optimizer).__name__}.",
            mistake="not_an_optimizer",
        )
    head = head_parameter_ids(model)
    if not any(g["params"] for g in optimizer.param_groups):
        return optimizer_vs_trainable(optimizer, model) or fail("empty optimizer", mistake="optimizer_empty")
    backbone_lrs = [_group_lr(g) for g in optimizer.param_groups if any(id(p) not in head for p in g["params"])]
    if not backbone_lrs:
        return fail(
            "This optimizer only trains the head: fine-tuning also updates the backbone (phase 2 needs a new "
            "optimizer over every parameter).",
            mistake="head_only_optimizer",
        )
    kind = optimizer_kind(optimizer)
    lowest, highest = _RANGES[kind]
    name = type(optimizer).__name__
    top, low = max(backbone_lrs), min(backbone_lrs)
    if top > highest * 1.0001:
        return fail(
            f"Learning rate far too high for fine-tuning: {fmt(top)} on pretrained layers would wreck the "
            f"pretrained features. With {name} use {fmt(lowest)} to {fmt(highest)} for the backbone {_WHERE}.",
            mistake="fine_tune_lr_too_high",
        )
    if top < lowest / 1.0001:
        return fail(
            f"Learning rate {fmt(top)} is so low the backbone will barely change: with {name} use {fmt(lowest)} "
            f"to {fmt(highest)} {_WHERE}.",
            mistake="fine_tune_lr_too_low",
        )
    lower = f" (lower layer groups down to {fmt(low)}: discriminative rates)" if low < top else ""
    return ok(
        f"Backbone learning rate {fmt(top)} with {name}{lower}: small enough to keep the pretrained features, "
        "large enough to change them."
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
        return fail(
            "Both the head and the backbone must be in the optimizer (in separate parameter groups).",
            mistake="group_missing",
        )
    if max(back_lrs) == min(head_lrs) and min(back_lrs) == max(head_lrs):
        return fail(
            "One learning rate everywhere: give the head a larger learning rate than the backbone "
            "(e.g. 10x), using parameter groups.",
            mistake="one_lr_everywhere",
        )
    if max(back_lrs) >= min(head_lrs):
        return fail(
            f"The backbone's learning rate ({fmt(max(back_lrs))}) is not below the head's "
            f"({fmt(min(head_lrs))}): it is the other way round — the new head learns fast, the pretrained "
            "layers slowly.",
            mistake="lrs_reversed",
        )
    return ok(f"Head lr {fmt(min(head_lrs))}, backbone lr up to {fmt(max(back_lrs))}.")


exercise(
    "fine_tune_lr",
    "Fine-tuning moves the pretrained backbone too, so its learning rate must be small enough to keep what "
    "it learned and large enough to change it at all; training the new head alone is not fine-tuning.",
    "ADAMW_LR_RANGE (tl_helpers.checks.fine_tuning) holds the backbone rates notebook 05's sweep kept; your "
    "chosen_lr comes from your range test; optimizer.param_groups shows each group's 'lr' and 'params'.",
    "phase2_lr = min(chosen_lr, ADAMW_LR_RANGE[1])  # never above the measured top\n"
    "head_optimizer, optimizer = two_phase(model, train_loader, 1e-3, phase2_lr, ...)\n"
    "print([g['lr'] for g in optimizer.param_groups])  # each inside ADAMW_LR_RANGE",
)

exercise(
    "discriminative_lr",
    "One optimizer, two parameter groups: the new head with a larger learning rate, every other parameter with "
    "a smaller one; each parameter in exactly one group.",
    "torch.optim.AdamW accepts a list of dicts {'params': [...], 'lr': ...}; model.get_classifier().parameters() "
    "are the head's; compare parameters by id() to split the rest off.",
    "head_ids = {id(p) for p in model.get_classifier().parameters()}\nbackbone = [p for p in model.parameters() "
    "if id(p) not in head_ids]\noptimizer_groups = torch.optim.AdamW([{'params': backbone, 'lr': ...}, {...}])",
)

exercise(
    "fine_tuned_accuracy",
    "Accuracy is the fraction of test images whose predicted class (the largest logit) is the true label, "
    "measured with the model in eval mode and without gradients.",
    "tl_helpers.train.evaluate(model, loader, device) returns an object with .accuracy, or write the loop: "
    "model.eval(), torch.no_grad(), logits.argmax(1) == y.",
    "model.eval()\ncorrect = 0\nwith torch.no_grad():\n    for x, y in test_loader:\n        correct += ...  # "
    "predictions equal to y\ntest_acc = correct / len(test_small)",
    check="accuracy",
)
