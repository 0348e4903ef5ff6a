"""In-notebook checks: any correct solution passes; each common mistake fails with its targeted hint.

Every diagnosed mistake of the issue has a wrong solution here (the code a learner would write), run
against the real check; alternative correct solutions must pass. Everything runs in-process on tiny
inputs (a few 64 px images, fake image sets), so the whole file takes seconds.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tl_helpers import models
from tl_helpers.checks import CHECKS, check, run_check
from tl_helpers.data import ImageTensors, make_loader


@pytest.fixture(scope="module")
def lite0_10() -> nn.Module:
    return models.load_backbone("efficientnet_lite0", num_classes=10)


@pytest.fixture
def model(lite0_10) -> nn.Module:
    return copy.deepcopy(lite0_10)


def fails_with(result, hint: str) -> None:
    assert not result.passed, result.feedback
    assert hint.lower() in result.feedback.lower(), result.feedback


def fake_images(n_per_class: int, offset: int = 0, size: int = 16, seed: int = 0) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    images = torch.randint(0, 256, (len(labels), 3, size, size), generator=g, dtype=torch.uint8)
    files = [f"C{int(y)}/img_{offset + i}.jpg" for i, y in enumerate(labels)]
    return ImageTensors(images, labels, files)


# ----------------------------------------------------------------------------- the registry and check()


def test_registry_points_and_unknown_id(capsys):
    assert len(CHECKS) >= 12 and all(c.points > 0 and c.description for c in CHECKS.values())
    with pytest.raises(KeyError, match="Unknown exercise"):
        check("no_such_check", 1)


def test_check_prints_and_never_raises_on_wrong_objects(capsys):
    result = check("freeze_backbone", "not a model")
    assert not result.passed and "❌ freeze_backbone (0/3" in capsys.readouterr().out

    def stub(images):
        raise NotImplementedError("hint")

    fails_with(run_check("normalisation", stub), "NotImplementedError")
    fails_with(run_check("optimizer_params", None, nn.Linear(2, 2)), "should be a torch.optim optimizer")


def test_a_crash_in_the_learners_hook_or_module_is_their_bug_with_their_line(model):
    def keep_bn_eval(module, inputs):  # the mistake: a forward pre-hook returning the module
        module.eval()
        return module

    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("classifier")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_pre_hook(keep_bn_eval)
    result = run_check("bn_frozen", model)
    fails_with(result, "Your forward pre-hook keep_bn_eval")
    assert "`return module`" in result.feedback and "could not use your objects" not in result.feedback

    def raising_hook(module, inputs):  # module.scale does not exist: AttributeError in the learner's line
        return (inputs[0] * module.scale,)

    other = copy.deepcopy(model)
    for m in other.modules():
        m._forward_pre_hooks.clear()
    other.classifier.register_forward_pre_hook(raising_hook)
    fails_with(run_check("bn_frozen", other), "raised AttributeError")  # bn_frozen names the hook or train()
    assert "`return (inputs[0] * module.scale,)`" in run_check("bn_frozen", other).feedback

    class Extractor(nn.Module):  # a custom feature extractor with a bug in forward
        def __init__(self, backbone: nn.Module) -> None:
            super().__init__()
            self.backbone = backbone

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone.forward_features(x).mean(dim=self.pool_dims)

    result = run_check("feature_extractor", Extractor(copy.deepcopy(other)).eval())
    fails_with(result, "Your function `forward` raised AttributeError")
    assert "`return self.backbone.forward_features(x).mean(dim=self.pool_dims)`" in result.feedback


# ----------------------------------------------------------------------------- freezing


def test_freeze_alternatives_pass(model, lite0_10):
    models.freeze(model)
    assert check("freeze_backbone", model).passed and check("bn_frozen", model).passed
    other = copy.deepcopy(lite0_10)  # by hand: requires_grad_ + BN in eval mode through train()
    other.requires_grad_(False)
    other.get_classifier().requires_grad_(True)
    for m in other.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_pre_hook(lambda mod, _: setattr(mod, "training", False))
    assert check("freeze_backbone", other).passed and check("bn_frozen", other).passed
    for m in other.modules():  # momentum 0 alone: still batch statistics in train mode
        if isinstance(m, nn.BatchNorm2d):
            m._forward_pre_hooks.clear()
            m.momentum = 0.0
    assert run_check("bn_frozen", other).mistake == "bn_momentum_zero"


def test_backbone_not_frozen(model):
    fails_with(run_check("freeze_backbone", model), "not frozen")


def test_backbone_partly_frozen(model):
    for p in model.blocks[:3].parameters():
        p.requires_grad = False
    fails_with(run_check("freeze_backbone", model), "partly frozen")


def test_head_frozen_too(model):
    model.requires_grad_(False)
    fails_with(run_check("freeze_backbone", model), "head is frozen")


def test_batchnorm_statistics_still_updating(model):
    for name, p in model.named_parameters():  # requires_grad alone does not freeze BN statistics
        p.requires_grad = name.startswith("classifier")
    assert run_check("freeze_backbone", model).passed
    fails_with(run_check("bn_frozen", model), "BatchNorm statistics still update")


def test_trainable_count(model):
    models.freeze(model)
    assert run_check("trainable_count", 12_810, model).passed
    fails_with(run_check("trainable_count", models.count_parameters(model).total, model), "total number")
    fails_with(run_check("trainable_count", 2, model), "tensors, not numbers")


# ----------------------------------------------------------------------------- optimizers and learning rates


def test_optimizer_alternatives_pass(model):
    models.freeze(model)
    for opt in (
        torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3),
        torch.optim.SGD(filter(lambda p: p.requires_grad, model.parameters()), lr=0.01),
        torch.optim.AdamW(model.get_classifier().parameters(), lr=1e-3),
    ):
        assert run_check("optimizer_params", opt, model).passed


def test_frozen_parameters_handed_to_optimizer(model):
    models.freeze(model)
    fails_with(
        run_check("optimizer_params", torch.optim.AdamW(model.parameters(), lr=1e-3), model),
        "Frozen parameters were handed",
    )


def test_trainable_parameters_left_out(model):
    opt = torch.optim.AdamW(model.get_classifier().parameters(), lr=1e-3)  # backbone trainable, not in optimizer
    fails_with(run_check("optimizer_params", opt, model), "missing from the optimizer")


def test_optimizer_with_no_parameters_consumed_generator(model):
    models.freeze(model)
    params = (p for p in model.parameters() if p.requires_grad)
    n = sum(p.numel() for p in params)  # the slip: this consumes the generator
    optimizer = torch.optim.AdamW([{"params": params, "lr": 1e-3}])  # no error from torch
    assert n > 0 and sum(len(g["params"]) for g in optimizer.param_groups) == 0
    fails_with(run_check("optimizer_params", optimizer, model), "no parameters at all")
    fails_with(run_check("fine_tune_lr", optimizer, model), "no parameters at all")


# fine_tune_lr and discriminative_lr: tests/test_exercise_05.py


# ----------------------------------------------------------------------------- heads


def test_replace_head_alternatives(lite0_10):
    for make in (
        lambda m: models.replace_head(m, 10),
        lambda m: m.reset_classifier(10),
        lambda m: setattr(m, "classifier", nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 10))),
    ):
        m = copy.deepcopy(lite0_10)
        make(m)
        assert run_check("replace_head", m).passed
    resnet = models.load_backbone("torchvision/resnet18", pretrained=False)
    resnet.fc = nn.Linear(resnet.fc.in_features, 10)
    assert run_check("replace_head", resnet).passed


def test_head_wrong_outputs_and_in_features(lite0_10):
    imagenet = copy.deepcopy(lite0_10)
    imagenet.reset_classifier(1000)
    fails_with(run_check("replace_head", imagenet), "1000 outputs")
    m = copy.deepcopy(lite0_10)
    m.classifier = nn.Linear(1280, 5)
    fails_with(run_check("replace_head", m), "5 outputs")
    m.classifier = nn.Linear(512, 10)  # in_features copied from a ResNet-18
    fails_with(run_check("replace_head", m), "in_features")


# ----------------------------------------------------------------------------- preprocessing and features


def test_normalisation(lite0_10):
    pre = models.get_preprocessing(lite0_10)
    assert pre.mean == (0.5, 0.5, 0.5)
    good = make_loader(fake_images(2), mean=pre.mean, std=pre.std)
    assert run_check("normalisation", good, lite0_10).passed
    assert run_check("normalisation", lambda x: x.float().div(127.5).sub(1), lite0_10).passed
    imagenet = make_loader(fake_images(2), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    fails_with(run_check("normalisation", imagenet, lite0_10), "ImageNet statistics")
    fails_with(
        run_check("normalisation", lambda x: (x.float() - 0.5) / 0.5, lite0_10), "divide the uint8 pixels by 255"
    )
    fails_with(run_check("normalisation", lambda x: x.float() / 255, lite0_10), "did not normalise")
    # a torchvision model really wants the ImageNet statistics: the same loader passes for it
    assert run_check("normalisation", imagenet, "torchvision/resnet18").passed


def test_feature_extractor():
    extractor = models.load_backbone("efficientnet_lite0")
    fails_with(run_check("feature_extractor", extractor.eval()), "1000 outputs")
    extractor.reset_classifier(0)
    assert run_check("feature_extractor", extractor.eval()).passed
    fails_with(run_check("feature_extractor", extractor.train()), "train mode")
    random_init = models.load_backbone("efficientnet_lite0", pretrained=False)
    random_init.reset_classifier(0)
    fails_with(run_check("feature_extractor", random_init.eval()), "pretrained=True")
    body = nn.Sequential(extractor.conv_stem, extractor.bn1, extractor.blocks).eval()
    fails_with(run_check("feature_extractor", body), "feature map")


# ----------------------------------------------------------------------------- splits and accuracy


def test_split_leakage():
    train, test = fake_images(3), fake_images(3, offset=1000, seed=1)  # other files, other pixels
    assert run_check("split_leakage", train, test).passed
    assert run_check("split_leakage", train.files, test.files).passed
    fails_with(run_check("split_leakage", train, train.subset(range(0, 30, 2))), "Data leakage")


def test_probe_accuracy():
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(0)
    y_train, y_test = torch.arange(4).repeat(25), torch.arange(4).repeat(10)
    X_train = torch.randn(100, 8, generator=g) + 3 * nn.functional.one_hot(y_train, 8)
    X_test = torch.randn(40, 8, generator=g) + 1.2 * nn.functional.one_hot(y_test, 8)
    clf = LogisticRegression(max_iter=500).fit(X_train.numpy(), y_train.numpy())
    test_acc, train_acc = clf.score(X_test.numpy(), y_test.numpy()), clf.score(X_train.numpy(), y_train.numpy())
    assert train_acc != test_acc
    assert run_check("probe_accuracy", test_acc, clf, X_train, y_train, X_test, y_test).passed
    fails_with(run_check("probe_accuracy", train_acc, clf, X_train, y_train, X_test, y_test), "wrong split")
    fails_with(run_check("probe_accuracy", test_acc * 100, clf, X_train, y_train, X_test, y_test), "fraction")
    leaky = torch.cat([X_test, X_train[:10]])
    fails_with(
        run_check("probe_accuracy", 0.9, clf, X_train, y_train, leaky, torch.cat([y_test, y_train[:10]])), "leakage"
    )


def _evaluate_good(model, loader, device):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x.to(device)).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def _evaluate_train_mode(model, loader, device):  # the mistake: no model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x.to(device)).argmax(1) == y).sum())
        total += len(y)
    return correct / total


def test_evaluate_mode():
    from tl_helpers.train import evaluate

    assert run_check("evaluate_mode", _evaluate_good).passed
    assert run_check("evaluate_mode", lambda m, loader, d: evaluate(m, loader, d).accuracy).passed
    fails_with(run_check("evaluate_mode", _evaluate_train_mode), "train mode")
    fails_with(run_check("evaluate_mode", lambda m, loader, d: 100 * _evaluate_good(m, loader, d)), "fraction")


class _Tiny(nn.Module):
    """Learns nothing; predicts from the mean colour, with BatchNorm so train/eval differ."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.classifier = nn.Linear(16, 10)
        with torch.no_grad():
            self.body[1].running_mean.fill_(0.3)

    def forward(self, x):
        return self.classifier(self.body(x))


def test_accuracy_split_mode_and_leakage():
    from tl_helpers.checks.core import accuracy_on as _accuracy_on

    model = _Tiny().eval()
    train, test = fake_images(20, size=16), fake_images(8, offset=500, size=16, seed=1)
    test_acc, train_acc = _accuracy_on(model, test), _accuracy_on(model, train)
    assert abs(test_acc - train_acc) > 0.02
    result = run_check("accuracy", test_acc, model, train, test)
    assert result.passed or "barely above chance" in result.feedback  # a random model: right value, low accuracy
    fails_with(run_check("accuracy", train_acc, model, train, test), "wrong split")
    fails_with(run_check("accuracy", test_acc, model, train, train.subset(range(10))), "Data leakage")
    # train mode (judged by recomputing, after the split): tests/test_exercise_04.py
