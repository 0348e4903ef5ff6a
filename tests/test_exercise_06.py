"""Exercise 06 (the capstone): wrong answers written the way learners write them, each named by its feedback;
correct answers written differently from the solution, which pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tl_helpers.checks import run_check
from tl_helpers.data import ImageTensors
from tl_helpers.train import History

GRADED_VARIANTS = [
    (
        "06_capstone_quick_check_exercises",
        "        chosen += rng.choice(np.flatnonzero(labels == c), size=n, replace=False).tolist()",
        "        chosen += np.flatnonzero(labels == c)[:n].tolist()",
        "balanced_split",
        "first n images",
    ),
    (
        "06_capstone_quick_check_exercises",
        "confused_pair = (classes[t], classes[p])",
        "confused_pair = (classes[p], classes[t])",
        "confused_pair",
        "Reversed",
    ),
]


# ----------------------------------------------------------------------------- balanced_split


def solution_subset(split, n, seed):
    rng = np.random.default_rng(seed)
    labels = split.labels.numpy()
    chosen = []
    for c in range(len(split.classes)):
        chosen += rng.choice(np.flatnonzero(labels == c), size=n, replace=False).tolist()
    return split.subset(sorted(chosen))


def torch_subset(split, n, seed):  # another correct way: torch.randperm per class, no sorting
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(split.labels):
        where = torch.nonzero(split.labels == c).flatten()
        picks.append(where[torch.randperm(len(where), generator=g)[:n]])
    return split.subset(torch.cat(picks))


def shuffled_subset(split, n, seed):  # another correct way: shuffle everything once, then fill each class
    order = np.random.default_rng(seed).permutation(len(split))
    taken: dict[int, list[int]] = {}
    for i in order:
        c = int(split.labels[i])
        if len(taken.setdefault(c, [])) < n:
            taken[c].append(int(i))
    return split.subset([i for c in sorted(taken) for i in taken[c]])


def global_shuffle(split, n, seed):
    order = np.random.default_rng(seed).permutation(len(split))
    return split.subset(order[: n * len(split.classes)].tolist())


def with_replacement(split, n, seed):
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(len(split.classes)):
        chosen += rng.choice(np.flatnonzero(split.labels.numpy() == c), size=n).tolist()
    return split.subset(chosen)


def first_n(split, n, seed):
    chosen = []
    for c in range(len(split.classes)):
        chosen += np.flatnonzero(split.labels.numpy() == c)[:n].tolist()
    return split.subset(chosen)


def unseeded(split, n, seed):
    rng = np.random.default_rng()
    chosen = []
    for c in range(len(split.classes)):
        chosen += rng.choice(np.flatnonzero(split.labels.numpy() == c), size=n, replace=False).tolist()
    return split.subset(chosen)


def misaligned(split, n, seed):
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(len(split.classes)):
        chosen += rng.choice(np.flatnonzero(split.labels.numpy() == c), size=n, replace=False).tolist()
    idx = torch.tensor(chosen)
    return ImageTensors(split.images[idx], split.labels[torch.sort(idx).values], [split.files[i] for i in chosen])


def ready_made(split, n, seed):
    return split.per_class(n, seed=seed)


@pytest.mark.parametrize("answer", [solution_subset, torch_subset, shuffled_subset])
def test_balanced_split_correct_answers_pass(answer):
    result = run_check("balanced_split", answer)
    assert result.passed, result.feedback


@pytest.mark.parametrize(
    "answer, phrase",
    [
        (global_shuffle, "Not balanced"),
        (with_replacement, "drawn twice"),
        (first_n, "first n images"),
        (unseeded, "same seed gave two different"),
        (misaligned, "no longer line up"),
        (ready_made, "You called .per_class()"),
        ("a subset, not a function", "not its result"),
    ],
)
def test_balanced_split_wrong_answers_are_named(answer, phrase):
    result = run_check("balanced_split", answer)
    assert not result.passed
    assert phrase in result.feedback, result.feedback


def test_balanced_split_crash_points_at_the_learners_line():
    def buggy(split, n, seed):
        rng = np.random.default_rng(seed)
        chosen = []
        for c in range(len(split.classes)):
            chosen += rng.choice(np.flatnonzero(split.labels.numpy() == c), size=n, replace=False).tolist()
        idx = torch.tensor(chosen)
        return ImageTensors(split.images[idx], split.labels[idx], split.files[idx], split.classes)

    result = run_check("balanced_split", buggy)
    assert not result.passed
    assert "Your balanced_subset raised TypeError" in result.feedback, result.feedback
    assert "split.files[idx]" in result.feedback


# ----------------------------------------------------------------------------- confused_pair on a tiny model

CLASSES = ("A", "B", "C", "D")


class Lookup(nn.Module):
    """A 'model' whose predictions are set by hand: image i (its index in pixel 0) gets label eval_pred[i]."""

    def __init__(self, eval_pred: list[int], train_pred: list[int]):
        super().__init__()
        self.eval_pred = torch.tensor(eval_pred)
        self.train_pred = torch.tensor(train_pred)
        self.dummy = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = torch.round((x[:, 0, 0, 0] * 0.5 + 0.5) * 255).long()
        pred = (self.train_pred if self.training else self.eval_pred)[index]
        return nn.functional.one_hot(pred, len(CLASSES)).float()


def tiny_test_set() -> ImageTensors:
    labels = torch.tensor([0] * 10 + [1] * 10 + [2] * 10 + [3] * 10)
    images = torch.zeros(len(labels), 3, 64, 64, dtype=torch.uint8)
    images[:, 0] = torch.arange(len(labels)).view(-1, 1, 1).to(torch.uint8)
    return ImageTensors(images, labels, [f"t{i}.jpg" for i in range(len(labels))], CLASSES)


def tiny_model() -> Lookup:
    # eval mode: B -> C 5 times (the top pair), C -> B 2 times, A -> D 3 times, D -> C 3 times
    pred = [0] * 7 + [3] * 3 + [1] * 5 + [2] * 5 + [2] * 8 + [1] * 2 + [3] * 7 + [2] * 3
    # train mode: A -> B 9 times is its top confusion
    train = [1] * 9 + [0] + pred[10:]
    return Lookup(pred, train)


def own_confusion(model, data):  # a correct answer written another way: sklearn and a loop over the batch
    from sklearn.metrics import confusion_matrix

    model.eval()
    x = (data.images.float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        pred = model(x).argmax(1)
    m = confusion_matrix(data.labels.numpy(), pred.numpy(), labels=range(len(data.classes)))
    np.fill_diagonal(m, 0)
    t, p = np.unravel_index(m.argmax(), m.shape)
    return (data.classes[t], data.classes[p])


def test_confused_pair_correct_answers_pass():
    data, model = tiny_test_set(), tiny_model()
    for answer in [own_confusion(model, data), ("B", "C"), (1, 2)]:
        result = run_check("confused_pair", answer, model, data, {"image_size": 64})
        assert result.passed, result.feedback


@pytest.mark.parametrize(
    "answer, phrase, mistake",
    [
        (("C", "B"), "Reversed", "pair_reversed"),
        (("B", "B"), "diagonal", "diagonal_pair"),
        (("A", "B"), "train mode", "pair_from_train_mode"),
        (("D", "C"), "Compute the confusion matrix of *this* model", "not_the_top_pair"),
        (("Bee", "C"), "not a class name", "unknown_class"),
        ("B", "Give a pair", "not_a_pair"),
    ],
)
def test_confused_pair_wrong_answers_are_named(answer, phrase, mistake):
    result = run_check("confused_pair", answer, tiny_model(), tiny_test_set(), {"image_size": 64})
    assert not result.passed and result.mistake == mistake, result.mistake
    assert phrase in result.feedback, result.feedback


def test_confused_pair_marginals_instead_of_the_cell():
    # most errors in B (6: B->A 3, B->D 3), most wrong predictions are C (A->C 2, D->C 2) but B->C never happens;
    # the top cell is B->A (3), tied with B->D.
    pred = [0] * 8 + [2] * 2 + [0] * 3 + [3] * 3 + [1] * 4 + [2] * 10 + [3] * 8 + [2] * 2
    model = Lookup(pred, pred)
    result = run_check("confused_pair", ("B", "C"), model, tiny_test_set(), {"image_size": 64})
    assert not result.passed
    assert "most frequent wrong prediction" in result.feedback, result.feedback
    assert result.mistake == "pair_from_marginals"


# ----------------------------------------------------------------------------- recipe_outcome (budget, leakage)


def history_of(epochs: int) -> History:
    return History(train_loss=[1.0] * epochs)


RECIPE = {"strategy": "fine-tune", "lr": 1e-3, "epochs": 5, "batch_size": 32, "image_size": 64}


def train_set(per_class: int, files: list[str] | None = None) -> ImageTensors:
    labels = torch.arange(10).repeat_interleave(per_class)
    names = files or [f"fake/{i}.jpg" for i in range(len(labels))]
    return ImageTensors(torch.zeros(len(labels), 3, 64, 64, dtype=torch.uint8), labels, names)


def test_recipe_over_the_budget_is_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 10))
    result = run_check("recipe_outcome", model, dict(RECIPE, epochs=20), history_of(20), train_set(30))
    assert not result.passed and "past the budget" in result.feedback and result.mistake == "over_budget"


def test_recipe_too_many_training_images_is_refused():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 10))
    result = run_check("recipe_outcome", model, RECIPE, history_of(1), train_set(250))
    assert not result.passed and "per class" in result.feedback, result.feedback


def test_recipe_incomplete_is_named():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 10))
    result = run_check(
        "recipe_outcome",
        model,
        {"strategy": "transfer", "lr": 1e-3, "epochs": 5, "batch_size": 32, "image_size": 64},
        history_of(5),
        train_set(30),
    )
    assert not result.passed and "must be one of" in result.feedback


@pytest.mark.real_data
def test_recipe_trained_on_test_images_is_named():
    from tl_helpers.data import load_eurosat

    test = load_eurosat(("test",), progress=False)["test"]
    files = test.files[:300]
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 64 * 64, 10))
    result = run_check("recipe_outcome", model, RECIPE, history_of(5), train_set(30, files))
    assert not result.passed and "Test images used for training" in result.feedback, result.feedback


@pytest.mark.real_data
def test_recipe_untrained_model_scores_below_the_bar():
    from tl_helpers.data import load_eurosat

    train = load_eurosat(("train",), progress=False)["train"].per_class(30)
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))  # never trained
    result = run_check("recipe_outcome", model, RECIPE, history_of(5), train)
    assert not result.passed and "private images" in result.feedback and "below" in result.feedback


@pytest.mark.real_data
def test_recipe_one_very_low_rate_for_a_new_head_is_named():
    from tl_helpers.data import load_eurosat

    train = load_eurosat(("train",), progress=False)["train"].per_class(30)
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))  # as untrained as a 1e-5 head
    recipe = {"strategy": "fine-tune", "lr": 1e-5, "epochs": 10, "batch_size": 32, "image_size": 64}
    result = run_check("recipe_outcome", model, recipe, history_of(10), train)
    assert not result.passed and "the new, random head cannot learn" in result.feedback, result.feedback


# ----------------------------------------------------------------------------- ImageTensors across a re-import


def test_balanced_split_accepts_an_image_tensors_of_a_reimported_class():
    class ImageTensors:  # a look-alike: what the notebook's class is after the grader re-imports tl_helpers
        def __init__(self, images, labels, files, classes=()):
            self.images, self.labels, self.files, self.classes = images, labels, files, classes

        def __len__(self):
            return len(self.labels)

    def rebuilt(split, n, seed):
        sub = solution_subset(split, n, seed)
        return ImageTensors(sub.images, sub.labels, sub.files, sub.classes)

    result = run_check("balanced_split", rebuilt)
    assert result.passed, result.feedback
    wrong = run_check("balanced_split", lambda split, n, seed: [1, 2, 3])
    assert not wrong.passed and wrong.mistake == "not_image_tensors"


# ----------------------------------------------------------------------------- recipe_outcome: work really done


def bn_model(batches: int = 0) -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)
    )
    model[1].num_batches_tracked.fill_(batches)
    return model


def stepped_optimizer(model: nn.Module, steps: int) -> torch.optim.Optimizer:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        opt.state[p]["step"] = torch.tensor(float(steps))
    return opt


@pytest.fixture
def no_real_data(monkeypatch):
    """The budget checks come before any scoring: stub the public test files they compare against."""
    import tl_helpers.data as data

    class _Test:
        files: list[str] = []

    monkeypatch.setattr(data, "load_eurosat", lambda *a, **k: {"test": _Test()})


def test_recipe_without_batch_size_is_incomplete(no_real_data):
    recipe = {k: v for k, v in RECIPE.items() if k != "batch_size"}
    result = run_check("recipe_outcome", bn_model(), recipe, history_of(5), train_set(30))
    assert not result.passed and result.mistake == "recipe_incomplete" and "batch_size" in result.feedback


def test_recipe_history_longer_than_stated_epochs(no_real_data):
    result = run_check("recipe_outcome", bn_model(), RECIPE, history_of(8), train_set(30))
    assert not result.passed and result.mistake == "epochs_past_recipe", result.feedback


@pytest.mark.parametrize("extra", ["fit_twice", "hand_loop"])
def test_recipe_extra_optimizer_steps_are_counted(no_real_data, extra):
    # 5 epochs of 300 images in batches of 32: at most 50 steps; a second fit (or a hand loop) doubles them
    model = bn_model()
    result = run_check(
        "recipe_outcome", model, RECIPE, history_of(5), train_set(30), None, stepped_optimizer(model, 90)
    )
    assert not result.passed and result.mistake == "extra_training_steps", result.feedback


def test_recipe_larger_training_set_than_passed_is_seen_in_batchnorm(no_real_data):
    # trained on 100 per class (1,000 images, 160 batches) but reported train_small (300 images): 50 allowed
    result = run_check("recipe_outcome", bn_model(160), RECIPE, history_of(5), train_set(30))
    assert not result.passed and result.mistake == "extra_training_passes", result.feedback


def test_recipe_head_only_with_drifting_batchnorm(no_real_data):
    model = bn_model(40)
    for p in model[:2].parameters():
        p.requires_grad = False
    recipe = dict(RECIPE, strategy="head-only")
    result = run_check("recipe_outcome", model, recipe, history_of(5), train_set(30))
    assert not result.passed and result.mistake == "head_only_bn_drift", result.feedback
    model[1].track_running_stats = False  # "frozen" by switching tracking off: still batch statistics
    model[1].num_batches_tracked.zero_()
    result = run_check("recipe_outcome", model, recipe, history_of(5), train_set(30))
    assert not result.passed and result.mistake == "head_only_bn_drift", result.feedback


class Memoriser(nn.Module):
    """Right on the images it has seen (``known``), a fixed wrong-ish guess elsewhere."""

    def __init__(self, known: ImageTensors | None, fallback: ImageTensors) -> None:
        super().__init__()
        self.known = known
        self.fallback = fallback
        self.dummy = nn.Linear(1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), 10)
        key = x.flatten(1).sum(1)
        for data in (self.known, self.fallback):
            if data is None:
                continue
            from tl_helpers.checks.core import preprocessing_of
            from tl_helpers.data import BatchTransform

            pre = preprocessing_of(self)
            ref = BatchTransform(pre.mean, pre.std, 64, pre.interpolation).transform(data.images).flatten(1).sum(1)
            for i, k in enumerate(key):
                hit = torch.nonzero((ref - k).abs() < 1e-3).flatten()
                if len(hit):
                    good = data is self.known or i % 5 != 0  # 80 % right on unseen images
                    label = int(data.labels[hit[0]])
                    out[i, label if good else (label + 1) % 10] = 4.0 if data is self.known else 2.0
        return out


def tiny_set(seed: int, per_class: int = 5) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(10).repeat_interleave(per_class)
    images = torch.randint(0, 256, (len(labels), 3, 64, 64), generator=g, dtype=torch.uint8)
    return ImageTensors(images, labels, [f"s{seed}/{i}.jpg" for i in range(len(labels))])


def test_recipe_model_that_memorised_the_test_images_is_named(no_real_data, monkeypatch):
    from tl_helpers.checks import outcomes

    test, held = tiny_set(1), tiny_set(2)
    monkeypatch.setattr(outcomes, "graded_heldout", lambda: held)
    both = ImageTensors(
        torch.cat([test.images, held.images]), torch.cat([test.labels, held.labels]), test.files + held.files
    )
    leaky = Memoriser(test, both)
    result = run_check("recipe_outcome", leaky, dict(RECIPE, epochs=1), history_of(1), train_set(30), test)
    assert not result.passed and result.mistake == "test_images_memorised", result.feedback
    honest = Memoriser(None, both)  # the same on test and private images: passes
    result = run_check("recipe_outcome", honest, dict(RECIPE, epochs=1), history_of(1), train_set(30), test)
    assert result.passed, result.feedback


# ----------------------------------------------------------------------------- honest_accuracy (the `accuracy` check)


class PixelLookup(nn.Module):
    """Knows the label of every training image by its pixels (train accuracy 1.0) and of the first
    ``test_right`` test images; every other image gets a wrong label. The same in train and eval mode."""

    def __init__(self, train: ImageTensors, test: ImageTensors, test_right: int) -> None:
        super().__init__()
        from tl_helpers.checks.core import preprocessing_of
        from tl_helpers.data import BatchTransform

        pre = preprocessing_of(self)
        transform = BatchTransform(pre.mean, pre.std, 64, pre.interpolation)
        images = torch.cat([train.images, test.images])
        self.keys = transform.transform(images).flatten(1).sum(1)
        right = torch.cat([torch.ones(len(train), dtype=torch.bool), torch.arange(len(test)) < test_right])
        labels = torch.cat([train.labels, test.labels])
        self.answers = torch.where(right, labels, (labels + 1) % 10)
        self.bn = nn.BatchNorm1d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nearest = (x.flatten(1).sum(1)[:, None] - self.keys[None]).abs().argmin(1)
        return nn.functional.one_hot(self.answers[nearest], 10).float() + 0 * self.bn(x.mean((1, 2, 3))[:, None])


@pytest.fixture(scope="module")
def memorising():
    """train_small memorised (accuracy 1.0), 84 of 120 test images right (0.7): the two clearly differ."""
    from tl_helpers.checks.core import accuracy_on

    train, test = tiny_set(3), tiny_set(4, per_class=12)
    model = PixelLookup(train, test, test_right=84).eval()
    assert accuracy_on(model, train) == 1.0 and accuracy_on(model, test) == 0.7
    return model, train, test


def test_honest_accuracy_reference_passes(memorising):
    model, train, test = memorising
    result = run_check("accuracy", 0.7, model, train, test)
    assert result.passed, result.feedback
    model.train()  # fit() leaves the model in train mode; evaluate() measured in eval mode: still right
    try:
        assert run_check("accuracy", torch.tensor(0.7), model, train, test).passed
    finally:
        model.eval()


@pytest.mark.parametrize("left_in_train_mode", [False, True])
def test_honest_accuracy_on_the_training_data_names_the_data(memorising, left_in_train_mode):
    model, train, test = memorising
    model.train(left_in_train_mode)
    try:
        result = run_check("accuracy", 1.0, model, train, test)
    finally:
        model.eval()
    assert not result.passed and result.mistake == "accuracy_on_training_data", result.feedback
    assert "training images" in result.feedback and "train mode" not in result.feedback, result.feedback


@pytest.mark.parametrize(
    ("reported", "mistake"),
    [
        (70.0, "accuracy_percentage"),
        (84, "accuracy_not_a_fraction"),  # the count of correct predictions
        (0.3, "accuracy_error_rate"),
        (20 / 56, "accuracy_last_batch_only"),  # the last batch of 64: images 64..119, 20 of them right
        (-0.2, "accuracy_not_a_fraction"),
        ("70%", "accuracy_not_a_number"),
        (0.45, "accuracy_mismatch"),
    ],
)
def test_honest_accuracy_wrong_numbers_are_named(memorising, reported, mistake):
    model, train, test = memorising
    result = run_check("accuracy", reported, model, train, test)
    assert not result.passed and result.mistake == mistake, (result.mistake, result.feedback)


def test_honest_accuracy_of_an_evaluation_result_object(memorising):
    from types import SimpleNamespace

    model, train, test = memorising
    result = run_check("accuracy", SimpleNamespace(accuracy=0.7, loss=1.0), model, train, test)
    assert not result.passed and result.mistake == "accuracy_not_a_number", result.feedback
    assert ".accuracy" in result.feedback


# ------------------------------------------------------------------ recipe_outcome: what fit and evaluate noted


def fit_tiny(model: nn.Module, data: ImageTensors, epochs: int = 3, optimizer=None, val=None):
    from tl_helpers.data import make_loader
    from tl_helpers.train import fit

    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = make_loader(data, batch_size=8, train=True, seed=0)
    val_loader = make_loader(val, batch_size=8) if val is not None else None
    history = fit(model, loader, val_loader, optimizer, epochs=epochs, device="cpu", progress=False)
    return optimizer, history


SMALL_RECIPE = dict(RECIPE, epochs=3, batch_size=8)  # 3 epochs of 30 images in batches of 8: 12 steps allowed (+2)


@pytest.fixture
def public_test(monkeypatch):
    """The public test split is tiny_set(1); the private images tiny_set(2)."""
    import tl_helpers.data as data
    from tl_helpers.checks import outcomes

    test = tiny_set(1, per_class=3)
    monkeypatch.setattr(data, "load_eurosat", lambda *a, **k: {"test": test})
    monkeypatch.setattr(outcomes, "graded_heldout", lambda: tiny_set(2, per_class=3))
    return test


def half_and_half(train: ImageTensors, test: ImageTensors) -> ImageTensors:
    a, b = train.subset(range(0, len(train), 2)), test.subset(range(0, len(test), 2))
    return ImageTensors(torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels]), a.files + b.files)


def test_recipe_fit_on_half_test_images_while_passing_the_clean_set(public_test):
    train = tiny_set(3, per_class=3)
    model = bn_model()
    optimizer, history = fit_tiny(model, half_and_half(train, public_test))
    result = run_check("recipe_outcome", model, SMALL_RECIPE, history, train, None, optimizer)
    assert not result.passed and result.mistake == "trained_on_test_images", result.feedback
    assert "fit trained your model on 15 test image(s)" in result.feedback


def test_recipe_fit_on_images_outside_the_passed_set(public_test):
    train, other = tiny_set(3, per_class=3), tiny_set(4, per_class=3)
    model = bn_model()
    optimizer, history = fit_tiny(model, other)
    result = run_check("recipe_outcome", model, SMALL_RECIPE, history, train, None, optimizer)
    assert not result.passed and result.mistake == "trained_on_other_images", result.feedback


def test_recipe_learning_rate_chosen_on_test_is_named(public_test):
    from tl_helpers.data import make_loader
    from tl_helpers.train import evaluate

    train = tiny_set(3, per_class=3)
    test = public_test.subset(range(len(public_test)))  # the learner's test_small
    test_loader = make_loader(test, batch_size=10)
    runs = []
    for lr in (1e-3, 1e-2):  # the mistake: keep the rate whose model scores best on the test images
        torch.manual_seed(0)
        model = bn_model()
        optimizer, history = fit_tiny(model, train, optimizer=torch.optim.AdamW(model.parameters(), lr=lr))
        runs.append((evaluate(model, test_loader, "cpu").accuracy, lr, model, optimizer, history))
    _, lr, model, optimizer, history = max(runs, key=lambda r: r[0])
    recipe = dict(SMALL_RECIPE, lr=lr)
    result = run_check("recipe_outcome", model, recipe, history, train, test, optimizer)
    assert not result.passed and result.mistake == "chose_on_test", result.feedback
    # the same model measured once on the test set, as exercise 3 asks, is not a choice
    fresh = public_test.subset(range(len(public_test)))
    evaluate(model, make_loader(fresh, batch_size=10), "cpu")
    result = run_check("recipe_outcome", model, recipe, history, train, fresh, optimizer)
    assert result.mistake != "chose_on_test", result.feedback


def test_recipe_test_set_as_fits_validation_is_named(public_test):
    train = tiny_set(3, per_class=3)
    test = public_test.subset(range(len(public_test)))
    model = bn_model()
    optimizer, history = fit_tiny(model, train, val=test)
    result = run_check("recipe_outcome", model, SMALL_RECIPE, history, train, test, optimizer)
    assert not result.passed and result.mistake == "chose_on_test", result.feedback


def frozen_head_model() -> nn.Module:
    """Head-only training done right: frozen convolution and BatchNorm kept in eval mode."""
    from tl_helpers.models import keep_bn_statistics

    torch.manual_seed(0)
    model = bn_model()
    for p in model[:2].parameters():
        p.requires_grad = False
    keep_bn_statistics(model)
    return model


def head_optimizer(model: nn.Module, cls=torch.optim.AdamW, lr: float = 1e-2) -> torch.optim.Optimizer:
    return cls([p for p in model.parameters() if p.requires_grad], lr=lr)


def test_recipe_head_only_trained_twice_with_fresh_optimizers(public_test):
    # BatchNorm in eval mode counts nothing and each optimizer counts only its own steps: fit's note counts both
    train = tiny_set(3, per_class=3)
    model = frozen_head_model()
    for _ in range(2):
        optimizer, history = fit_tiny(model, train, optimizer=head_optimizer(model))
    recipe = dict(SMALL_RECIPE, strategy="head-only", lr=1e-2)
    result = run_check("recipe_outcome", model, recipe, history, train, None, optimizer)
    assert not result.passed and result.mistake == "trained_twice", result.feedback
    assert "2 times (18 optimizer steps in all)" in result.feedback


@pytest.mark.parametrize("cls", [torch.optim.AdamW, torch.optim.SGD])
def test_recipe_hand_loop_then_fit_with_a_fresh_optimizer(public_test, cls):
    from tl_helpers.data import make_loader

    train = tiny_set(3, per_class=3)
    model = frozen_head_model()
    first = head_optimizer(model, cls)
    model.train()
    for _ in range(3):  # a first training run in a hand-written loop
        for x, y in make_loader(train, batch_size=8, train=True):
            first.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            first.step()
    optimizer, history = fit_tiny(model, train, optimizer=head_optimizer(model, cls))
    recipe = dict(SMALL_RECIPE, strategy="head-only", lr=1e-2)
    result = run_check("recipe_outcome", model, recipe, history, train, None, optimizer)
    assert not result.passed and result.mistake == "trained_with_another_optimizer", result.feedback


def test_recipe_one_head_only_run_is_within_the_budget(public_test):
    train = tiny_set(3, per_class=3)
    model = frozen_head_model()
    optimizer, history = fit_tiny(model, train, optimizer=head_optimizer(model))
    recipe = dict(SMALL_RECIPE, strategy="head-only", lr=1e-2)
    result = run_check("recipe_outcome", model, recipe, history, train, None, optimizer)
    # tiny random images: the private score decides, not the budget
    assert result.mistake in (None, "below_private_bar"), result.feedback


@pytest.mark.parametrize(
    ("cls", "kwargs", "expected"),
    [
        (torch.optim.AdamW, {}, 7),
        (torch.optim.AdamW, {"weight_decay": 0.0}, 7),
        (torch.optim.Adam, {}, 7),
        (torch.optim.SGD, {"momentum": 0.9}, 7),
        (torch.optim.AdamW, {"fused": True}, None),  # fused kernels leave the version counter alone
    ],
)
def test_parameter_updates_counts_steps_over_every_optimizer(cls, kwargs, expected):
    from tl_helpers.checks.outcomes import parameter_updates

    model = nn.Linear(4, 3)
    optimizer = None
    for steps in (3, 4):  # two optimizers, 7 steps in all
        optimizer = cls(model.parameters(), lr=1e-3, **kwargs)
        for _ in range(steps):
            optimizer.zero_grad()
            model(torch.randn(2, 4)).sum().backward()
            optimizer.step()
    counted = parameter_updates(model, optimizer)
    if expected is None:
        assert counted is None
    else:  # the initialisation's own in-place writes may add one
        assert expected <= counted <= expected + 1
