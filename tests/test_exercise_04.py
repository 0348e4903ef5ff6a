"""Exercise 04 (a new head, an evaluation loop by hand) and the `accuracy` check it feeds (also used by 05/06).

Wrong answers are the code a learner writes; each must be named by its feedback. Correct alternatives pass.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tl_helpers import models
from tl_helpers.checks import run_check
from tl_helpers.checks.heads import accuracy_floor
from tl_helpers.data import ImageTensors

# (assignment, solution line(s) replaced, learner code, gradebook column, phrase in the feedback or None = correct)
GRADED_VARIANTS = [
    (
        "04_replacing_the_head_exercises",
        "model.classifier = nn.Linear(model.classifier.in_features, 10)",
        "model.fc = nn.Linear(model.classifier.in_features, 10)",
        "replace_head",
        "never used",
    ),
    (
        "04_replacing_the_head_exercises",
        "            total += len(y)",
        "            total += loader.batch_size",
        "evaluate_mode",
        "batch_size x len(loader)",
    ),
    (
        "04_replacing_the_head_exercises",
        "resnet.fc = nn.Linear(resnet.fc.in_features, 10)",
        "resnet.fc = nn.Sequential(nn.Dropout(0.3), nn.Linear(512, 10))",
        "replace_head_resnet",
        None,
    ),
]


@pytest.fixture(scope="module")
def lite0() -> nn.Module:
    return models.load_backbone("efficientnet_lite0", pretrained=False)


@pytest.fixture
def model(lite0) -> nn.Module:
    return copy.deepcopy(lite0)


@pytest.fixture
def resnet() -> nn.Module:
    return models.load_backbone("torchvision/resnet18", pretrained=False)


def fails_with(result, phrase: str) -> None:
    assert not result.passed, result.feedback
    assert phrase.lower() in result.feedback.lower(), result.feedback


# ----------------------------------------------------------------------------- exercises 1-2: the head


def test_head_kept_at_1000_outputs(model):
    model.classifier = nn.Linear(model.classifier.in_features, model.classifier.out_features)
    fails_with(run_check("replace_head", model), "1000 outputs")


def test_out_features_attribute_changed(model):
    model.classifier.out_features = 10  # only the attribute: the weight still has 1000 rows
    fails_with(run_check("replace_head", model), "out_features` was changed")


def test_head_set_under_the_wrong_name(model, resnet):
    model.fc = nn.Linear(model.classifier.in_features, 10)  # EfficientNet's head is `classifier`
    fails_with(run_check("replace_head", model), "never used")
    resnet.classifier = nn.Linear(resnet.fc.in_features, 10)  # ResNet's head is `fc`
    fails_with(run_check("replace_head", resnet), "never used")


def test_in_features_copied_from_the_other_architecture(model, resnet):
    model.classifier = nn.Linear(512, 10)
    fails_with(run_check("replace_head", model), "in_features")
    resnet.fc = nn.Linear(1280, 10)
    fails_with(run_check("replace_head", resnet), "512, but the head expects 1280")


def test_head_ends_in_softmax(model):
    model.classifier = nn.Sequential(nn.Linear(model.classifier.in_features, 10), nn.Softmax(dim=1))
    fails_with(run_check("replace_head", model), "softmax")


def test_five_outputs(resnet):
    resnet.fc = nn.Linear(resnet.fc.in_features, 5)
    fails_with(run_check("replace_head", resnet), "5 outputs")


def test_head_alternatives(model, resnet):
    m = copy.deepcopy(model)
    m.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(model.num_features, 10))
    assert run_check("replace_head", m).passed
    m = copy.deepcopy(model)
    m.reset_classifier(10)
    assert run_check("replace_head", m).passed
    old = resnet.fc
    resnet.fc = nn.Linear(old.in_features, 10, bias=True)
    assert run_check("replace_head", resnet).passed


# ----------------------------------------------------------------------------- exercise 3: the evaluation loop


def good(model, loader, device):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
            total += len(y)
    return correct / total


def no_eval(model, loader, device):
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x.to(device)).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def no_grad_missing(model, loader, device):
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += (model(x.to(device)).argmax(1) == y).sum().item()
        total += y.shape[0]
    return correct / total


def mean_of_batches(model, loader, device):
    model.eval()
    accs = []
    with torch.no_grad():
        for x, y in loader:
            accs.append((model(x).argmax(1) == y).float().mean().item())
    return sum(accs) / len(accs)


def per_number_of_batches(model, loader, device):
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / len(loader)


def full_batches_assumed(model, loader, device):
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / (loader.batch_size * len(loader))


def last_batch_only(model, loader, device):
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            correct, total = 0, 0
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return correct / total


def leaves_train_mode(model, loader, device):
    acc = good(model, loader, device)
    model.train()  # "back to training", whatever the mode was
    return acc


def crashes(model, loader, device):
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)
            correct = (logits.argmax(2) == y).sum()
    return correct


@pytest.mark.parametrize(
    ("function", "phrase"),
    [
        (no_eval, "train mode"),
        (lambda m, loader, d: 100 * good(m, loader, d), "fraction"),
        (no_grad_missing, "torch.no_grad"),
        (mean_of_batches, "per-batch accuracies"),
        (per_number_of_batches, "number of batches"),
        (full_batches_assumed, "every batch is full"),
        (last_batch_only, "last batch only"),
        (leaves_train_mode, "restore the mode you found"),
        (crashes, "logits.argmax(2)"),
    ],
)
def test_evaluate_mistakes(function, phrase):
    fails_with(run_check("evaluate_mode", function), phrase)


def restores_mode(model, loader, device):
    was_training = model.training
    model.eval()
    hits = n = 0
    with torch.inference_mode():
        for x, y in loader:
            pred = torch.softmax(model(x.to(device)), dim=1).argmax(dim=1)
            hits += (pred == y.to(device)).sum().item()
            n += y.numel()
    model.train(was_training)
    return hits / n


def test_evaluate_alternatives():
    from tl_helpers.train import evaluate

    for function in (good, restores_mode, lambda m, loader, d: evaluate(m, loader, d).accuracy):
        result = run_check("evaluate_mode", function)
        assert result.passed, result.feedback


# ----------------------------------------------------------------------------- the accuracy check (05, 06)


def fake_images(n_per_class: int, offset: int = 0, size: int = 16, seed: int = 0) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(n_per_class)
    images = torch.randint(0, 256, (len(labels), 3, size, size), generator=g, dtype=torch.uint8)
    files = [f"C{int(y)}/img_{offset + i}.jpg" for i, y in enumerate(labels)]
    return ImageTensors(images, labels, files)


class Memorised(nn.Module):
    """Predicts the right class for the first `k` images of each fixed batch-position pattern (set by a table)."""

    def __init__(self, table: dict[bytes, int]):
        super().__init__()
        self.table = table
        self.bn = nn.BatchNorm2d(3)
        self.classifier = nn.Linear(3, 10)

    def forward(self, x):
        out = torch.zeros(len(x), 10)
        for i, image in enumerate(x):
            out[i, self.table.get(image.mul(1000).round().to(torch.int64).numpy().tobytes(), 0)] = 1.0
        return out + 0 * self.classifier(self.bn(x).mean((2, 3)))


def memorising_model(train: ImageTensors, test: ImageTensors, train_right: int, test_right: int) -> nn.Module:
    """A model whose eval-mode accuracy is exactly train_right/len(train) and test_right/len(test)."""
    from tl_helpers.checks.core import preprocessing_of
    from tl_helpers.data import BatchTransform

    table: dict[bytes, int] = {}
    pre = preprocessing_of("efficientnet_lite0")
    transform = BatchTransform(pre.mean, pre.std, 16, pre.interpolation)
    for data, right in ((train, train_right), (test, test_right)):
        x = transform.transform(data.images)
        for i in range(len(data)):
            label = int(data.labels[i])
            table[x[i].mul(1000).round().to(torch.int64).numpy().tobytes()] = label if i < right else (label + 1) % 10
    return Memorised(table).eval()


def test_accuracy_on_the_training_data_with_evaluate_is_the_wrong_split():
    """Defect (b): evaluate() restores train mode; the split is what is wrong, and it is said first."""
    train, test = fake_images(10), fake_images(5, offset=500, seed=1)
    model = memorising_model(train, test, train_right=90, test_right=20)
    train_acc = 90 / 100
    model.train()  # left in train mode, as fit() leaves it (evaluate() restored it)
    fails_with(run_check("accuracy", train_acc, model, train, test), "wrong split")
    model.eval()
    fails_with(run_check("accuracy", train_acc, model, train, test), "wrong split")


def test_accuracy_floor_is_relative_and_passes_a_short_fine_tuning():
    """Defect (a): lr=1e-4, two epochs, 300 test images: 28.7% is a real result, 10% is not."""
    assert accuracy_floor(300, 10) < 0.20 < 0.287
    train, test = fake_images(10), fake_images(30, offset=500, seed=1)
    short_run = memorising_model(train, test, train_right=50, test_right=86)  # 28.7% of 300
    result = run_check("accuracy", 86 / 300, short_run, train, test)
    assert result.passed, result.feedback
    chance = memorising_model(train, test, train_right=10, test_right=30)  # 10%: nothing learned
    fails_with(run_check("accuracy", 30 / 300, chance, train, test), "barely above chance")


class TrainModeDiffers(nn.Module):
    """Right on the test images in eval mode; in train mode (BatchNorm on batch statistics) right on few."""

    def __init__(self, eval_model: nn.Module, train_model: nn.Module):
        super().__init__()
        self.eval_model, self.train_model = eval_model, train_model

    def forward(self, x):
        return self.train_model(x) if self.training else self.eval_model(x)


def test_accuracy_in_train_mode_judged_by_recomputing():
    from tl_helpers.checks.core import accuracy_on

    train, test = fake_images(10), fake_images(8, offset=500, seed=1)
    model = TrainModeDiffers(memorising_model(train, test, 50, 60), memorising_model(train, test, 50, 20))
    measured = accuracy_on(model, test, train_mode=True)
    assert measured == 20 / 80 and accuracy_on(model, test) == 60 / 80
    model.eval()  # measured in train mode, then put back in eval mode: only recomputing can tell
    fails_with(run_check("accuracy", measured, model, train, test), "matches the model measured in train mode")
    model.train()  # and measured with evaluate() (eval mode) but left in train mode: correct
    assert run_check("accuracy", 60 / 80, model, train, test).passed


def test_released_stub_is_not_done_yet():
    def evaluate_accuracy(model, loader, device):
        raise NotImplementedError('Your code here (the task is above). Stuck? hint("evaluate_mode")')

    fails_with(run_check("evaluate_mode", evaluate_accuracy), "Not done yet")


# ----------------------------------------------------------------------------- mistake names (the class summary)


def fails_as(result, mistake: str) -> None:
    assert not result.passed, result.feedback
    assert result.mistake == mistake, (result.mistake, result.feedback)


def test_replace_head_mistake_names(model, resnet):
    m = copy.deepcopy(model)
    m.classifier = nn.Linear(m.classifier.in_features, 1000)
    fails_as(run_check("replace_head", m), "imagenet_head_kept")
    m = copy.deepcopy(model)
    m.fc = nn.Linear(m.classifier.in_features, 10)
    fails_as(run_check("replace_head", m), "head_not_attached")
    m = copy.deepcopy(model)
    m.classifier = nn.Linear(m.classifier.in_features, 10, bias=False)
    fails_as(run_check("replace_head", m), "head_without_bias")
    m = copy.deepcopy(model)
    m.classifier = nn.Linear(m.classifier.in_features, 10)
    m.classifier.requires_grad_(False)
    fails_as(run_check("replace_head", m), "head_frozen")
    r = copy.deepcopy(resnet)
    r.fc = nn.Linear(1280, 10)
    fails_as(run_check("replace_head", r), "head_in_features_wrong")
    r.fc = nn.Linear(512, 5)
    fails_as(run_check("replace_head", r), "wrong_num_classes")
    r.fc = nn.Linear(512, 10)
    assert run_check("replace_head", r).passed


def test_evaluate_mode_mistake_names():
    fails_as(run_check("evaluate_mode", no_eval), "eval_train_mode")
    fails_as(run_check("evaluate_mode", no_grad_missing), "no_no_grad")
    fails_as(run_check("evaluate_mode", mean_of_batches), "mean_of_batch_accuracies")
    fails_as(run_check("evaluate_mode", full_batches_assumed), "full_batches_assumed")
    fails_as(run_check("evaluate_mode", leaves_train_mode), "mode_not_restored")
    assert run_check("evaluate_mode", good).passed
