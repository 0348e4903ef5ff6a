"""Exercise 05 (fine-tuning): the learner's training step, LR range test, its reading, two phases, lrs.

Every wrong answer is the code a learner writes (a missing zero_grad, a linear lr ramp, a backbone never
unfrozen...) run against the real check, which must fail with feedback naming that mistake; every
alternative correct answer (SGD with momentum, another valid lr, a hand-written loop) must pass.
The functions run on the checks' tiny model, so the file takes seconds.
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from tl_helpers import models
from tl_helpers.checks import HINTS, run_check

device = torch.device("cpu")  # the notebook global the learner's functions use


def fails_with(result, phrase: str) -> None:
    assert not result.passed, result.feedback
    assert phrase.lower() in result.feedback.lower(), result.feedback


@pytest.fixture(scope="module")
def lite0_10() -> nn.Module:
    return models.load_backbone("efficientnet_lite0", num_classes=10)


@pytest.fixture
def model(lite0_10) -> nn.Module:
    return copy.deepcopy(lite0_10)


# ----------------------------------------------------------------------------- answers, as learners write them


def train_step(model, batch, optimizer):
    model.train()
    x, y = batch
    x, y = x.to(device), y.to(device)
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def train_step_zero_at_end(model, batch, optimizer):  # correct too: gradients cleared after each step
    model.train()
    logits = model(batch[0].to(device))
    loss = nn.CrossEntropyLoss()(logits, batch[1].to(device))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def step_no_zero_grad(model, batch, optimizer):
    model.train()
    x, y = batch
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def step_no_backward(model, batch, optimizer):
    model.train()
    x, y = batch
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.step()
    return loss.item()


def step_before_backward(model, batch, optimizer):
    model.train()
    x, y = batch
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.step()
    loss.backward()
    return loss.item()


def step_left_in_eval(model, batch, optimizer):
    x, y = batch
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.item()


def step_returns_nothing(model, batch, optimizer):
    model.train()
    x, y = batch
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def step_own_optimizer(model, batch, optimizer):
    model.train()
    x, y = batch
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss.item()


def step_no_grad_forward(model, batch, optimizer):
    model.train()
    x, y = batch
    optimizer.zero_grad()
    with torch.no_grad():
        logits = model(x)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    return loss.item()


def lr_range_test(model, loader, lr_min, lr_max, num_steps):
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr_min)
    batches = itertools.cycle(loader)
    lrs, losses = [], []
    for step in range(num_steps):
        lr = lr_min * (lr_max / lr_min) ** (step / (num_steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = train_step(model, next(batches), optimizer)
        lrs.append(lr)
        losses.append(loss)
        if not math.isfinite(loss) or loss > 4 * min(losses):
            break
    return lrs, losses


def range_test_sgd_smoothed(model, loader, lr_min, lr_max, num_steps):  # correct: SGD, smoothed, own stop rule
    optimizer = torch.optim.SGD(model.parameters(), lr=lr_min, momentum=0.9)
    factor = (lr_max / lr_min) ** (1 / (num_steps - 1))
    lrs, losses, smooth, lr, it = [], [], None, lr_min, iter(loader)
    for _ in range(num_steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        optimizer.param_groups[0]["lr"] = lr
        raw = train_step(model, batch, optimizer)
        smooth = raw if smooth is None else 0.7 * smooth + 0.3 * raw
        lrs.append(lr)
        losses.append(smooth)
        if math.isnan(raw) or smooth > 3 * min(losses):
            break
        lr *= factor
    return lrs, losses


def range_test_linear(model, loader, lr_min, lr_max, num_steps):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr_min)
    lrs, losses = [], []
    for step, batch in zip(range(num_steps), itertools.cycle(loader)):
        lr = lr_min + (lr_max - lr_min) * step / (num_steps - 1)
        optimizer.param_groups[0]["lr"] = lr
        loss = train_step(model, batch, optimizer)
        lrs.append(lr)
        losses.append(loss)
        if not math.isfinite(loss) or loss > 4 * min(losses):
            break
    return lrs, losses


def range_test_lr_never_set(model, loader, lr_min, lr_max, num_steps):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr_min)
    lrs, losses = [], []
    for step, batch in zip(range(num_steps), itertools.cycle(loader)):
        lr = lr_min * (lr_max / lr_min) ** (step / (num_steps - 1))
        loss = train_step(model, batch, optimizer)  # the slip: lr computed and recorded, never set
        lrs.append(lr)
        losses.append(loss)
        if not math.isfinite(loss) or loss > 4 * min(losses):
            break
    return lrs, losses


def range_test_never_stops(model, loader, lr_min, lr_max, num_steps):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr_min)
    lrs, losses = [], []
    for step, batch in zip(range(num_steps), itertools.cycle(loader)):
        lr = lr_min * (lr_max / lr_min) ** (step / (num_steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses.append(train_step(model, batch, optimizer))
        lrs.append(lr)
    return lrs, losses


def two_phase(model, loader, head_lr, low_lr, head_epochs, full_epochs):
    for p in model.parameters():
        p.requires_grad = False
    head = list(model.get_classifier().parameters())
    for p in head:
        p.requires_grad = True
    head_optimizer = torch.optim.AdamW(head, lr=head_lr)
    for _ in range(head_epochs):
        for batch in loader:
            train_step(model, batch, head_optimizer)
    for p in model.parameters():
        p.requires_grad = True
    full_optimizer = torch.optim.AdamW(model.parameters(), lr=low_lr)
    for _ in range(full_epochs):
        for batch in loader:
            train_step(model, batch, full_optimizer)
    return head_optimizer, full_optimizer


def two_phase_sgd_discriminative(model, loader, head_lr, low_lr, head_epochs, full_epochs):
    # correct: requires_grad_ on modules, SGD with momentum, phase 2 with a faster head, a cosine schedule
    model.requires_grad_(False)
    model.classifier.requires_grad_(True)
    opt1 = torch.optim.SGD(model.classifier.parameters(), lr=head_lr, momentum=0.9)
    for _epoch in range(head_epochs):
        for x, y in loader:
            train_step(model, (x, y), opt1)
    model.requires_grad_(True)
    head_ids = {id(p) for p in model.classifier.parameters()}
    opt2 = torch.optim.SGD(
        [
            {"params": [p for p in model.parameters() if id(p) not in head_ids], "lr": low_lr},
            {"params": list(model.classifier.parameters()), "lr": head_lr},
        ],
        momentum=0.9,
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=full_epochs * len(loader))
    for _epoch in range(full_epochs):
        for batch in loader:
            train_step(model, batch, opt2)
            sched.step()
    return opt1, opt2


def _phase_variant(*, freeze_head=False, freeze_backbone=True, unfreeze=True, phase2_lr=None, reuse=False):
    def fn(model, loader, head_lr, low_lr, head_epochs, full_epochs):
        if freeze_backbone:
            for p in model.parameters():
                p.requires_grad = False
            if not freeze_head:
                for p in model.get_classifier().parameters():
                    p.requires_grad = True
        params = model.parameters() if not freeze_backbone else model.get_classifier().parameters()
        if freeze_head:
            params = model.parameters()
        opt1 = torch.optim.AdamW([p for p in params if p.requires_grad or freeze_head], lr=head_lr)
        for _ in range(head_epochs):
            for batch in loader:
                train_step(model, batch, opt1)
        if unfreeze:
            for p in model.parameters():
                p.requires_grad = True
        opt2 = opt1 if reuse else torch.optim.AdamW(model.parameters(), lr=phase2_lr or low_lr)
        for _ in range(full_epochs):
            for batch in loader:
                train_step(model, batch, opt2)
        return opt1, opt2

    return fn


# ----------------------------------------------------------------------------- train_step


@pytest.mark.parametrize("fn", [train_step, train_step_zero_at_end])
def test_train_step_correct_answers_pass(fn):
    result = run_check("train_step", fn, device)
    assert result.passed, result.feedback


@pytest.mark.parametrize(
    ("fn", "phrase"),
    [
        (step_no_zero_grad, "not zeroed"),
        (step_no_backward, "call loss.backward()"),
        (step_before_backward, "step() ran before loss.backward()"),
        (step_left_in_eval, "eval mode"),
        (step_returns_nothing, "returned nothing"),
        (step_own_optimizer, "optimizer passed in"),
        (step_no_grad_forward, "raised RuntimeError"),
    ],
)
def test_train_step_mistakes_are_named(fn, phrase):
    fails_with(run_check("train_step", fn, device), phrase)


def test_train_step_crash_names_the_learners_line():
    def step(model, batch, optimizer):
        x, y = batch
        return model(x).mean().item() + y.nope  # AttributeError in the learner's own code

    result = run_check("train_step", step, device)
    fails_with(result, "y.nope")


# ----------------------------------------------------------------------------- the LR range test


@pytest.mark.parametrize("fn", [lr_range_test, range_test_sgd_smoothed])
def test_lr_range_test_correct_answers_pass(fn):
    result = run_check("lr_range_test", fn, device)
    assert result.passed, result.feedback


@pytest.mark.parametrize(
    ("fn", "phrase"),
    [
        (range_test_linear, "grows linearly"),
        (range_test_lr_never_set, "not the one the optimizer uses"),
        (range_test_never_stops, "never stopped"),
    ],
)
def test_lr_range_test_mistakes_are_named(fn, phrase):
    fails_with(run_check("lr_range_test", fn, device), phrase)


def test_lr_range_test_stopping_at_once_is_named():
    def stops_at_once(model, loader, lr_min, lr_max, num_steps):
        lrs, losses = lr_range_test(model, loader, lr_min, lr_max, num_steps)
        return lrs[:5], losses[:5]  # e.g. `if loss > min(losses)`: stops at the first noisy uptick

    fails_with(run_check("lr_range_test", stops_at_once, device), "had not diverged")


# ----------------------------------------------------------------------------- reading the curve

# a curve shaped like the exercise's: flat, falling from about 1e-4, lowest near 1.6e-2, then diverging
CURVE_LRS = [1e-5 * (1e5 ** (i / 39)) for i in range(27)]
CURVE_LOSSES = [2.35 - 2.0 / (1 + math.exp(-(i - 14) / 2.5)) for i in range(26)] + [9.0]


def test_curve_fixture_has_its_landmarks():
    from tl_helpers.checks.fine_tuning import read_curve

    marks = read_curve(CURVE_LRS, CURVE_LOSSES)
    assert 1e-2 < marks["lr_at_min"] < 2e-2 and marks["steepest"] < marks["lr_at_min"]


@pytest.mark.parametrize("rule", ["tenth", "steepest", "third_of_tenth"])
def test_sensible_readings_of_the_own_curve_pass(rule):
    import numpy as np

    from tl_helpers.checks.fine_tuning import read_curve

    at_min = CURVE_LRS[int(np.argmin(CURVE_LOSSES))]
    chosen = {
        "tenth": at_min / 10,
        "steepest": read_curve(CURVE_LRS, CURVE_LOSSES)["steepest"],
        "third_of_tenth": at_min / 30,
    }[rule]
    result = run_check("range_test_lr", chosen, CURVE_LRS, CURVE_LOSSES)
    assert result.passed, result.feedback


@pytest.mark.parametrize(
    ("chosen", "phrase"),
    [
        (CURVE_LRS[-1], "past the divergence point"),
        (CURVE_LRS[int(min(range(26), key=lambda i: CURVE_LOSSES[i]))], "at or past the minimum"),
        (8e-3, "too close to the minimum"),
        (1e-5, "flat start"),
    ],
)
def test_bad_readings_are_named(chosen, phrase):
    fails_with(run_check("range_test_lr", chosen, CURVE_LRS, CURVE_LOSSES), phrase)


def test_reading_a_linear_curve_is_refused():
    lrs = [1e-5 + i * 1e-3 for i in range(20)]
    fails_with(run_check("range_test_lr", 1e-3, lrs, [2.0 - 0.05 * i for i in range(20)]), "linearly")


# ----------------------------------------------------------------------------- two phases


@pytest.mark.parametrize("fn", [two_phase, two_phase_sgd_discriminative])
def test_two_phase_correct_answers_pass(fn):
    result = run_check("two_phase", fn, device)
    assert result.passed, result.feedback


@pytest.mark.parametrize(
    ("fn", "phrase"),
    [
        (_phase_variant(freeze_head=True), "the head too"),
        (_phase_variant(unfreeze=False), "never unfrozen"),
        (_phase_variant(reuse=True), "the backbone is in no optimizer"),
        (_phase_variant(freeze_backbone=False), "phase 1 trained the backbone"),
        (_phase_variant(phase2_lr=1e-2), "not at the low lr"),
    ],
)
def test_two_phase_mistakes_are_named(fn, phrase):
    fails_with(run_check("two_phase", fn, device), phrase)


def test_two_phase_frozen_params_in_phase_one_optimizer_named():
    def fn(model, loader, head_lr, low_lr, head_epochs, full_epochs):
        model.requires_grad_(False)
        model.get_classifier().requires_grad_(True)
        opt1 = torch.optim.AdamW(model.parameters(), lr=head_lr)  # frozen weights handed over too
        for _ in range(head_epochs):
            for batch in loader:
                train_step(model, batch, opt1)
        model.requires_grad_(True)
        opt2 = torch.optim.AdamW(model.parameters(), lr=low_lr)
        for _ in range(full_epochs):
            for batch in loader:
                train_step(model, batch, opt2)
        return opt1, opt2

    fails_with(run_check("two_phase", fn, device), "holds the frozen backbone")


def test_two_phase_must_return_both_optimizers():
    def fn(model, loader, head_lr, low_lr, head_epochs, full_epochs):
        two_phase(model, loader, head_lr, low_lr, head_epochs, full_epochs)

    fails_with(run_check("two_phase", fn, device), "return the optimizers of both phases")


# ----------------------------------------------------------------------------- fine_tune_lr, discriminative_lr


@pytest.mark.parametrize("lr", [1e-4, 3e-4, 1e-3])
def test_fine_tune_lr_every_recommended_adamw_lr_passes(model, lr):
    result = run_check("fine_tune_lr", torch.optim.AdamW(model.parameters(), lr=lr), model)
    assert result.passed, result.feedback


@pytest.mark.parametrize("lr", [1e-3, 1e-2, 3e-2])
def test_fine_tune_lr_sgd_momentum_passes(model, lr):
    result = run_check("fine_tune_lr", torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9), model)
    assert result.passed, result.feedback


def test_fine_tune_lr_measured_range(model):
    high = run_check("fine_tune_lr", torch.optim.AdamW(model.parameters(), lr=1e-2), model)
    fails_with(high, "far too high")
    fails_with(high, "notebook 05")  # the message says where the range comes from
    # notebook 05 measured 2e-3 (more than five points lost) and 1e-5 (little learned) outside the range
    fails_with(run_check("fine_tune_lr", torch.optim.AdamW(model.parameters(), lr=2e-3), model), "far too high")
    fails_with(run_check("fine_tune_lr", torch.optim.AdamW(model.parameters(), lr=1e-5), model), "barely change")
    fails_with(run_check("fine_tune_lr", torch.optim.AdamW(model.parameters(), lr=0.1), model), "far too high")
    fails_with(run_check("fine_tune_lr", torch.optim.SGD(model.parameters(), lr=0.1), model), "far too high")
    fails_with(run_check("fine_tune_lr", torch.optim.SGD(model.parameters(), lr=1.0), model), "far too high")
    fails_with(run_check("fine_tune_lr", torch.optim.AdamW(model.parameters(), lr=1e-7), model), "barely change")
    fails_with(
        run_check("fine_tune_lr", torch.optim.AdamW(model.get_classifier().parameters(), lr=1e-3), model),
        "only trains the head",
    )


def test_fine_tune_lr_with_a_finished_schedule_reads_the_peak(model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=1)
    optimizer.step()
    scheduler.step()  # the lr is now 0; the peak was 1e-3
    assert run_check("fine_tune_lr", optimizer, model).passed


def test_discriminative_lr(model):
    good = torch.optim.AdamW(models.discriminative_param_groups(model, head_lr=1e-3))
    assert run_check("discriminative_lr", good, model).passed
    head = list(model.get_classifier().parameters())
    rest = [p for p in model.parameters() if all(p is not h for h in head)]
    by_hand = torch.optim.SGD([{"params": rest, "lr": 1e-3}, {"params": head, "lr": 1e-2}], momentum=0.9)
    assert run_check("discriminative_lr", by_hand, model).passed
    fails_with(
        run_check("discriminative_lr", torch.optim.AdamW(model.parameters(), lr=1e-4), model),
        "One learning rate everywhere",
    )
    reversed_ = torch.optim.AdamW([{"params": rest, "lr": 1e-3}, {"params": head, "lr": 1e-4}])
    fails_with(run_check("discriminative_lr", reversed_, model), "other way round")
    fails_with(run_check("discriminative_lr", torch.optim.AdamW(rest, lr=1e-4), model), "missing")


def test_every_exercise_05_id_has_three_hint_steps():
    for exercise in (
        "train_step",
        "lr_range_test",
        "range_test_lr",
        "two_phase",
        "fine_tune_lr",
        "discriminative_lr",
        "fine_tuned_accuracy",
    ):
        assert len(set(HINTS[exercise].steps)) == 3


# end-to-end notebook variants, collected by tests/test_grading.py (format of its VARIANTS)
GRADED_VARIANTS = [
    (
        "05_fine_tuning_low_lr_exercises",
        "head_optimizer, optimizer = two_phase(model, train_loader, 1e-3, phase2_lr, 3, 2)",
        "head_optimizer, optimizer = two_phase(model, train_loader, 1e-3, 1e-4, 3, 2)",
        "fine_tuned_accuracy",
        None,  # phase 2 at 1e-4, a rate the course recommends: full marks
    ),
    ("05_fine_tuning_low_lr_exercises", "    optimizer.zero_grad()", "    pass", "train_step", "not zeroed"),
    (
        "05_fine_tuning_low_lr_exercises",
        "chosen_lr = lr_at_min / 10",
        "chosen_lr = lr_at_min",
        "range_test_lr",
        "at or past the minimum",
    ),
]


# ----------------------------------------------------------------------------- mistake names (the class summary)


def fails_as(result, mistake: str) -> None:
    assert not result.passed, result.feedback
    assert result.mistake == mistake, (result.mistake, result.feedback)


def _noisy_curve(seed: int = 0) -> tuple[list[float], list[float]]:
    """An unsmoothed range-test curve: the fixture's shape plus batch-to-batch noise."""
    g = torch.Generator().manual_seed(seed)
    noise = (torch.randn(len(CURVE_LOSSES), generator=g) * 0.08).tolist()
    return CURVE_LRS, [x + n if x < 5 else x for x, n in zip(CURVE_LOSSES, noise)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_steepest_point_of_an_unsmoothed_curve_passes(seed):
    import numpy as np

    lrs, losses = _noisy_curve(seed)
    i_min = int(np.argmin(losses))
    slope = np.gradient(np.array(losses[: i_min + 1]), np.log(lrs[: i_min + 1]))
    chosen = lrs[int(np.argmin(slope))]
    result = run_check("range_test_lr", chosen, lrs, losses)
    assert result.passed, result.feedback
    assert "rule applied" in result.feedback
    assert run_check("range_test_lr", lrs[i_min] / 10, lrs, losses).passed


def test_steepest_point_of_the_smoothed_curve_passes():
    from tl_helpers.checks.fine_tuning import read_curve, smooth_curve

    lrs, losses = _noisy_curve(3)
    chosen = read_curve(lrs, smooth_curve(losses))["steepest"]
    assert run_check("range_test_lr", chosen, lrs, losses).passed


def test_min_loss_lr_itself_is_rejected_and_named():
    import numpy as np

    lrs, losses = _noisy_curve(0)
    result = run_check("range_test_lr", lrs[int(np.argmin(losses))], lrs, losses)
    fails_as(result, "lr_at_minimum")
    assert "rule applied" in result.feedback and "accepted:" in result.feedback
    fails_as(run_check("range_test_lr", 1e-5, CURVE_LRS, CURVE_LOSSES), "lr_flat_start")
    fails_as(run_check("range_test_lr", 8e-3, CURVE_LRS, CURVE_LOSSES), "lr_near_minimum")
    fails_as(run_check("range_test_lr", CURVE_LRS[-1], CURVE_LRS, CURVE_LOSSES), "lr_past_divergence")


def _reuse_with_lr_changed(model, loader, head_lr, low_lr, head_epochs, full_epochs):
    """Phase 2 reuses the head's optimizer and lowers its rate: the backbone is in no optimizer."""
    model.requires_grad_(False)
    model.get_classifier().requires_grad_(True)
    opt = torch.optim.AdamW(model.get_classifier().parameters(), lr=head_lr)
    for _ in range(head_epochs):
        for batch in loader:
            train_step(model, batch, opt)
    model.requires_grad_(True)
    for group in opt.param_groups:
        group["lr"] = low_lr
    for _ in range(full_epochs):
        for batch in loader:
            train_step(model, batch, opt)
    return opt, opt


def _new_optimizer_over_the_head(model, loader, head_lr, low_lr, head_epochs, full_epochs):
    """Phase 2 unfreezes everything but builds its optimizer over the head again."""
    model.requires_grad_(False)
    model.get_classifier().requires_grad_(True)
    opt1 = torch.optim.AdamW(model.get_classifier().parameters(), lr=head_lr)
    for _ in range(head_epochs):
        for batch in loader:
            train_step(model, batch, opt1)
    model.requires_grad_(True)
    opt2 = torch.optim.AdamW(model.get_classifier().parameters(), lr=low_lr)
    for _ in range(full_epochs):
        for batch in loader:
            train_step(model, batch, opt2)
    return opt1, opt2


@pytest.mark.parametrize(
    ("fn", "mistake"),
    [
        (_reuse_with_lr_changed, "phase2_reuses_head_optimizer"),
        (_new_optimizer_over_the_head, "backbone_not_in_phase2_optimizer"),
        (_phase_variant(unfreeze=False), "backbone_never_unfrozen"),
        (_phase_variant(reuse=True), "phase2_reuses_head_optimizer"),
        (_phase_variant(freeze_backbone=False), "phase1_backbone_trained"),
        (_phase_variant(phase2_lr=1e-2), "phase2_lr_too_high"),
    ],
)
def test_two_phase_mistake_names(fn, mistake):
    result = run_check("two_phase", fn, device)
    fails_as(result, mistake)
    assert "head_lr" not in result.feedback  # never blamed on the head's rate


def test_two_phase_reference_still_passes():
    assert run_check("two_phase", two_phase, device).passed


def test_fine_tune_lr_accepts_notebook_05s_discriminative_rates(model):
    from tl_helpers import models

    groups = models.discriminative_param_groups(model, 1e-3, decay=0.73)
    assert min(g["lr"] for g in groups) < 1e-4  # the stem's rate is below the range on purpose
    result = run_check("fine_tune_lr", torch.optim.AdamW(groups), model)
    assert result.passed, result.feedback


def test_fine_tune_lr_mistake_names_and_current_numbers(model):
    high = run_check("fine_tune_lr", torch.optim.AdamW(model.parameters(), lr=2e-3), model)
    fails_as(high, "fine_tune_lr_too_high")
    assert "more than five points" in high.feedback and "15 points" not in high.feedback
    fails_as(run_check("fine_tune_lr", torch.optim.AdamW(model.parameters(), lr=1e-5), model), "fine_tune_lr_too_low")
    fails_as(
        run_check("fine_tune_lr", torch.optim.AdamW(model.get_classifier().parameters(), lr=1e-3), model),
        "head_only_optimizer",
    )


def test_train_step_and_range_test_mistake_names():
    fails_as(run_check("train_step", step_no_zero_grad, device), "grad_not_zeroed")
    fails_as(run_check("train_step", step_left_in_eval, device), "step_in_eval_mode")
    fails_as(run_check("lr_range_test", range_test_linear, device), "lr_linear")
    fails_as(run_check("lr_range_test", range_test_never_stops, device), "never_stops")
    assert run_check("train_step", train_step, device).passed
    assert run_check("lr_range_test", lr_range_test, device).passed
