"""Exercise 03 (freezing by hand): learner-style wrong answers are named by their feedback; other correct ways pass.

Each wrong answer is code a learner writes in the exercise cell (run here on a copy of the model), then
the check the notebook runs; each correct alternative must get full marks. In-process, a few seconds.
"""

from __future__ import annotations

import copy
import types

import pytest
import torch
from torch import nn

from tl_helpers import models
from tl_helpers.checks import run_check

# (assignment, solution line(s) replaced, learner code, gradebook column, phrase in the feedback or None = correct)
GRADED_VARIANTS = [
    (
        "03_freezing_exercises",
        "        module.register_forward_pre_hook(keep_in_eval_mode)",
        "        module.eval()",
        "bn_frozen",
        "calls model.train() at the start of every",
    ),
    (
        "03_freezing_exercises",
        "    module.eval()  # runs before every forward pass, after any model.train()",
        "    module.eval()\n    return module",
        "bn_frozen",
        "returns the module itself",
    ),
    (
        "03_freezing_exercises",
        "        module.register_forward_pre_hook(keep_in_eval_mode)",
        "        module.momentum = 0.0",
        "bn_frozen",
        "momentum = 0 stops the running statistics",
    ),
]


@pytest.fixture(scope="module")
def lite0_10() -> nn.Module:
    return models.load_backbone("efficientnet_lite0", num_classes=10)


@pytest.fixture
def model(lite0_10) -> nn.Module:
    return copy.deepcopy(lite0_10)


def fails_with(result, phrase: str) -> None:
    assert not result.passed, result.feedback
    assert phrase.lower() in result.feedback.lower(), result.feedback


def fails_as(result, mistake: str) -> None:
    """The check failed and named ``mistake`` for the class summary."""
    assert not result.passed, result.feedback
    assert result.mistake == mistake, (result.mistake, result.feedback)


def freeze_params(model: nn.Module) -> None:
    """The solution's first cell: every parameter frozen, the head trainable again."""
    for p in model.parameters():
        p.requires_grad = False
    for p in model.get_classifier().parameters():
        p.requires_grad = True


def bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


# ----------------------------------------------------------------------------- exercise 1: requires_grad


def test_module_attribute_instead_of_parameters(model):
    model.requires_grad = False  # a plain attribute: freezes nothing
    fails_with(run_check("freeze_backbone", model), "plain Python attribute")


def test_modules_loop_attribute(model):
    for m in model.modules():
        m.requires_grad = False
    fails_with(run_check("freeze_backbone", model), "plain Python attribute")


def test_only_the_blocks_frozen(model):
    for p in model.blocks.parameters():  # conv_stem, bn1, conv_head, bn2 forgotten
        p.requires_grad = False
    fails_with(run_check("freeze_backbone", model), "partly frozen")


def test_head_frozen_too(model):
    for p in model.parameters():
        p.requires_grad = False
    fails_with(run_check("freeze_backbone", model), "head is frozen")


def test_head_unfrozen_under_the_wrong_name(model):
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("fc")  # ResNet's name; EfficientNet's head is `classifier`
    fails_with(run_check("freeze_backbone", model), "head is frozen")


def test_detach_in_a_loop_freezes_nothing(model):
    for p in model.parameters():
        p = p.detach()  # noqa: PLW2901 - the learner's slip: rebinds the loop variable only
    fails_with(run_check("freeze_backbone", model), "not frozen")


# ----------------------------------------------------------------------------- exercise 2: BatchNorm


def test_requires_grad_only(model):
    freeze_params(model)
    assert run_check("freeze_backbone", model).passed
    fails_with(run_check("bn_frozen", model), "BatchNorm statistics still update")


def test_eval_once_is_undone_by_fit(model):
    freeze_params(model)
    for m in bn_layers(model):
        m.eval()
    fails_with(run_check("bn_frozen", model), "calls model.train() at the start of every")
    assert all(not m.training for m in bn_layers(model))  # the check put the learner's modes back


def test_pre_hook_returning_the_module(model):
    """Defect (d): the learner's bug, with their line; not "the check could not use your objects"."""
    freeze_params(model)

    def keep_eval(module, inputs):
        module.eval()
        return module

    for m in bn_layers(model):
        m.register_forward_pre_hook(keep_eval)
    result = run_check("bn_frozen", model)
    fails_with(result, "returns the module itself")
    assert "`return module`" in result.feedback and "could not use your objects" not in result.feedback


def test_pre_hook_with_a_typo_reports_the_learners_line(model):
    freeze_params(model)

    def keep_eval(module, inputs):
        module.eval()
        modul.training = False  # noqa: F821 - the typo

    for m in bn_layers(model):
        m.register_forward_pre_hook(keep_eval)
    result = run_check("bn_frozen", model)
    fails_with(result, "NameError")
    assert "modul.training = False" in result.feedback and "could not use your objects" not in result.feedback


def test_pre_hook_with_the_wrong_signature(model):
    freeze_params(model)

    def keep_eval(module):
        module.eval()

    for m in bn_layers(model):
        m.register_forward_pre_hook(keep_eval)
    fails_with(run_check("bn_frozen", model), "keep_eval() on")


def test_lambda_over_the_loop_variable(model):
    freeze_params(model)
    for m in bn_layers(model):
        m.register_forward_pre_hook(lambda module, inputs: setattr(m, "training", False))  # noqa: B023
    fails_with(run_check("bn_frozen", model), "the module it receives")  # the slip: always the last m


def test_lambda_calling_eval_returns_the_module(model):
    freeze_params(model)
    for m in bn_layers(model):
        m.register_forward_pre_hook(lambda module, inputs: module.eval())
    fails_with(run_check("bn_frozen", model), "a lambda that calls it returns it too")


def test_hook_without_parentheses(model):
    freeze_params(model)

    def keep_eval(module, inputs):
        module.eval  # noqa: B018 - the slip: never called

    for m in bn_layers(model):
        m.register_forward_pre_hook(keep_eval)
    fails_with(run_check("bn_frozen", model), "without () does nothing")


def test_overridden_train_that_calls_itself(model):
    freeze_params(model)

    def train(mode=True):
        model.train(mode)  # the slip: model.train is this function now
        for m in bn_layers(model):
            m.eval()
        return model

    model.train = train
    result = run_check("bn_frozen", model)
    fails_with(result, "calls itself")
    assert "model.train(mode)" in result.feedback


def test_exact_type_misses_timms_batchnorm(model):
    freeze_params(model)
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:  # timm's BatchNormAct2d is a subclass: none matched
            m.register_forward_pre_hook(lambda mod, _: setattr(mod, "training", False))
    result = run_check("bn_frozen", model)
    fails_with(result, "BatchNorm statistics still update")
    fails_as(result, "bn_not_frozen")


def test_requires_grad_only_is_named(model):
    freeze_params(model)
    fails_as(run_check("bn_frozen", model), "bn_not_frozen")


def test_eval_once_is_named(model):
    freeze_params(model)
    for m in bn_layers(model):
        m.eval()
    fails_as(run_check("bn_frozen", model), "bn_eval_once")


def test_momentum_zero_still_normalises_with_batch_statistics(model):
    """Statistics that never move are not enough: in train mode the layer uses each batch's statistics."""
    freeze_params(model)
    for m in bn_layers(model):
        m.momentum = 0.0
    result = run_check("bn_frozen", model)
    fails_as(result, "bn_momentum_zero")
    assert "eval mode" in result.feedback and "set their momentum to 0" not in result.feedback


def test_tracking_turned_off_on_pretrained_layers(model):
    freeze_params(model)
    for m in bn_layers(model):
        m.track_running_stats = False  # buffers kept, never updated, batch statistics used in train mode
    fails_as(run_check("bn_frozen", model), "bn_tracking_off")


def test_running_statistics_removed(model):
    freeze_params(model)
    for m in bn_layers(model):
        m.track_running_stats = False
        m.running_mean = m.running_var = None
    fails_as(run_check("bn_frozen", model), "bn_no_running_stats")


def test_statistics_copied_back_after_each_forward(model):
    freeze_params(model)

    def restore(module, inputs, output):
        module.running_mean.copy_(module.saved_mean)
        module.running_var.copy_(module.saved_var)

    for m in bn_layers(model):
        m.saved_mean, m.saved_var = m.running_mean.clone(), m.running_var.clone()
        m.register_forward_hook(restore)
    fails_as(run_check("bn_frozen", model), "bn_stats_copied_back")


def test_only_the_blocks_batchnorm_kept_in_eval(model):
    freeze_params(model)
    for m in model.blocks.modules():  # bn1 (after the stem) and bn2 (before the head) forgotten
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_pre_hook(lambda mod, _: setattr(mod, "training", False))
    result = run_check("bn_frozen", model)
    fails_as(result, "bn_some_layers")
    assert "bn1" in result.feedback or "bn2" in result.feedback


# ----------------------------------------------------------------------------- exercise 3: counting


def test_counting_mistakes(model):
    freeze_params(model)
    fails_with(run_check("trainable_count", sum(p.numel() for p in model.parameters()), model), "total number")
    fails_with(run_check("trainable_count", sum(1 for p in model.parameters() if p.requires_grad), model), "tensors")
    fails_with(run_check("trainable_count", model.classifier.weight.numel(), model), "biases")


# ----------------------------------------------------------------------------- exercise 4: the optimizer


def test_optimizer_mistakes(model):
    freeze_params(model)
    fails_with(run_check("optimizer_params", torch.optim.AdamW(model.parameters(), lr=1e-3), model), "Frozen")
    copy_ = copy.deepcopy(model)
    fails_with(
        run_check("optimizer_params", torch.optim.AdamW(copy_.get_classifier().parameters(), lr=1e-3), model),
        "another model object",
    )


def test_consumed_generator_says_what_fit_really_does(model):
    """Defect (f): fit() raises on an empty optimizer; the message says so."""
    from tl_helpers.train import fit

    freeze_params(model)
    params = (p for p in model.parameters() if p.requires_grad)
    print(f"{sum(p.numel() for p in params):,} trainable")  # consumes the generator
    optimizer = torch.optim.AdamW([{"params": params}], lr=1e-3)
    result = run_check("optimizer_params", optimizer, model)
    fails_with(result, "no parameters at all")
    assert "fit() stops at once with ValueError" in result.feedback and "no error is raised" not in result.feedback
    loader = [(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))]
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(model, loader, None, optimizer, epochs=1, device="cpu", progress=False)


# ----------------------------------------------------------------------------- correct alternatives


def all_pass(model: nn.Module) -> None:
    for cid in ("freeze_backbone", "bn_frozen"):
        result = run_check(cid, model)
        assert result.passed, (cid, result.feedback)


def test_requires_grad_and_eval_mode_through_train(model):
    model.requires_grad_(False)
    model.get_classifier().requires_grad_(True)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0  # harmless once the layer stays in eval mode
            m.register_forward_pre_hook(lambda mod, _: setattr(mod, "training", False))
    all_pass(model)


def test_named_parameters_and_overridden_train(model):
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("classifier.")

    def train(self, mode=True):
        nn.Module.train(self, mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    model.train = types.MethodType(train, model)
    all_pass(model)
    model.train()
    assert model.training and not any(m.training for m in bn_layers(model))


def test_pre_hook_setting_training_false(model, lite0_10):
    freeze_params(model)
    handles = [m.register_forward_pre_hook(lambda mod, _: setattr(mod, "training", False)) for m in bn_layers(model)]
    all_pass(model)
    assert handles
    helper = copy.deepcopy(lite0_10)
    models.freeze(helper)  # the course's helper is fine too: checks test behaviour
    all_pass(helper)


def test_check_leaves_the_learners_model_as_it_was(model):
    freeze_params(model)
    model.train()
    stats = bn_layers(model)[0].running_mean.clone()
    run_check("bn_frozen", model)
    assert model.training and torch.equal(bn_layers(model)[0].running_mean, stats)


def test_optimizer_alternatives(model):
    freeze_params(model)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert run_check("trainable_count", n, model).passed
    for opt in (
        torch.optim.SGD(filter(lambda p: p.requires_grad, model.parameters()), lr=0.01, momentum=0.9),
        torch.optim.Adam(model.get_classifier().parameters(), lr=1e-3),
        torch.optim.AdamW([{"params": [model.classifier.weight]}, {"params": [model.classifier.bias], "lr": 1e-2}]),
    ):
        assert run_check("optimizer_params", opt, model).passed


# ----------------------------------------------------------------------------- mistake names (the class summary)


def test_batchnorm_weights_left_trainable_is_named(model):
    freeze_params(model)
    for m in bn_layers(model):
        m.requires_grad_(True)  # "BatchNorm should keep learning": its scale and shift are backbone weights
    fails_as(run_check("freeze_backbone", model), "bn_affine_trainable")


def test_freeze_backbone_mistake_names(model):
    for p in model.blocks.parameters():
        p.requires_grad = False
    fails_as(run_check("freeze_backbone", model), "backbone_partly_frozen")
    model.requires_grad_(False)
    fails_as(run_check("freeze_backbone", model), "head_frozen")
    model.get_classifier().requires_grad_(True)
    assert run_check("freeze_backbone", model).passed


def test_counting_mistake_names(model):
    freeze_params(model)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    fails_as(run_check("trainable_count", sum(p.numel() for p in model.parameters()), model), "count_total")
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    fails_as(run_check("trainable_count", frozen, model), "count_frozen")
    everything = sum(t.numel() for t in model.state_dict().values())
    fails_as(run_check("trainable_count", everything, model), "count_buffers")
    fails_as(run_check("trainable_count", n / 1e6, model), "count_scaled")
    fails_as(run_check("trainable_count", f"{n:,}", model), "count_not_a_number")
    assert run_check("trainable_count", n, model).passed
    assert run_check("trainable_count", torch.tensor(n), model).passed


def test_optimizer_mistake_names(model):
    freeze_params(model)
    fails_as(
        run_check("optimizer_params", torch.optim.AdamW(model.parameters(), lr=1e-3), model), "optimizer_frozen_params"
    )
    head = list(model.get_classifier().parameters())
    with pytest.warns(UserWarning, match="duplicate"):
        twice = torch.optim.AdamW(head + [model.classifier.weight], lr=1e-3)
    fails_as(run_check("optimizer_params", twice, model), "optimizer_duplicate_params")
    fails_as(
        run_check("optimizer_params", torch.optim.AdamW([model.classifier.weight], lr=1e-3), model),
        "optimizer_missing_params",
    )
    fails_as(run_check("optimizer_params", head, model), "not_an_optimizer")
    assert run_check("optimizer_params", torch.optim.AdamW(head, lr=1e-3), model).passed
