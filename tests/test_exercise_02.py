"""Exercise 02 (feature extraction): learner-style wrong answers are named, other correct answers pass."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch.utils.data import DataLoader

from tl_helpers import features, models
from tl_helpers.checks import run_check

GRADED_VARIANTS = [
    (
        "02_feature_extraction_exercises",
        "    val_scores.append(candidate.score(X_val.numpy(), y_val.numpy()))",
        "    val_scores.append(candidate.score(X_test.numpy(), y_test.numpy()))",
        "probe_selection",
        "chose C by test accuracy",
    ),
    (
        "02_feature_extraction_exercises",
        "clf = features.fit_logistic_regression(X_train, y_train, C=best_C, seed=seed)",
        "clf = features.fit_logistic_regression(torch.cat([X_train, X_test]), torch.cat([y_train, y_test]), "
        "C=best_C, seed=seed)",
        "probe_selection",
        "refitted on train + test",
    ),
    (
        "02_feature_extraction_exercises",
        "    extractor.eval()",
        "    pass",
        "extract_loop",
        "train mode",
    ),
    (  # left in train mode; the learner's own extraction loop calls eval() on it later
        "02_feature_extraction_exercises",
        "extractor.eval()",
        "pass",
        "feature_extractor",
        "train mode",
    ),
]


def fails_with(result, phrase: str) -> None:
    assert not result.passed, result.feedback
    assert phrase.lower() in result.feedback.lower(), result.feedback


def test_feature_extractor_message_suggests_only_working_calls():
    with_head = models.load_backbone("efficientnet_lite0").eval()
    result = run_check("feature_extractor", with_head)
    fails_with(result, "1000 outputs")
    assert "num_classes=0" not in result.feedback and "reset_classifier(0)" in result.feedback


# ----------------------------------------------------------------------------- extract_loop


def test_extract_loop_correct_answers_pass():
    def solution(extractor, loader):
        extractor.eval()
        feats, labels = [], []
        with torch.no_grad():
            for X, y in loader:
                feats.append(extractor(X))
                labels.append(y)
        return torch.cat(feats), torch.cat(labels)

    @torch.inference_mode()
    def numpy_way(extractor, loader):  # decorator, numpy output, one list of pairs
        extractor = extractor.eval()
        pairs = [(extractor(X).numpy(), y.numpy()) for X, y in loader]
        return np.concatenate([f for f, _ in pairs]), np.concatenate([y for _, y in pairs])

    assert run_check("extract_loop", solution).passed
    assert run_check("extract_loop", numpy_way).passed


def test_extract_loop_wrong_answers_are_named():
    def no_eval(extractor, loader):
        feats, labels = [], []
        with torch.no_grad():
            for X, y in loader:
                feats.append(extractor(X))
                labels.append(y)
        return torch.cat(feats), torch.cat(labels)

    def no_grad_missing(extractor, loader):
        extractor.eval()
        feats, labels = [], []
        for X, y in loader:
            feats.append(extractor(X))
            labels.append(y)
        return torch.cat(feats), torch.cat(labels)

    def overwritten(extractor, loader):
        extractor.eval()
        with torch.no_grad():
            for X, y in loader:
                feats = extractor(X)
                labels = y
        return feats, labels

    def labels_from_a_shuffled_pass(extractor, loader):
        extractor.eval()
        with torch.no_grad():
            feats = torch.cat([extractor(X) for X, _ in loader])
        shuffled = DataLoader(loader.dataset, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(1))
        return feats, torch.cat([y for _, y in shuffled])

    def normalised_twice(extractor, loader):
        extractor.eval()
        feats, labels = [], []
        with torch.no_grad():
            for X, y in loader:
                feats.append(extractor((X / 255 - 0.5) / 0.5))
                labels.append(y)
        return torch.cat(feats), torch.cat(labels)

    fails_with(run_check("extract_loop", no_eval), "train mode")
    fails_with(run_check("extract_loop", no_grad_missing), "autograd")
    fails_with(run_check("extract_loop", overwritten), "only one batch")
    fails_with(run_check("extract_loop", labels_from_a_shuffled_pass), "do not line up")
    fails_with(run_check("extract_loop", normalised_twice), "already normalises")


def test_feature_extractor_mistakes_have_their_own_name():
    built = models.load_backbone("efficientnet_lite0")
    built.reset_classifier(0)
    left_in_train_mode = built  # a later loop's extractor.eval() must not rescue it: checked as handed over
    result = run_check("feature_extractor", left_in_train_mode)
    assert result.mistake == "extractor_train_mode", result.feedback
    only_bn_eval = copy.deepcopy(built)
    for m in only_bn_eval.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    result = run_check("feature_extractor", only_bn_eval)  # BatchNorm in eval, the rest (dropout) in train mode
    assert result.mistake == "extractor_train_mode", result.feedback
    feature_map = torch.nn.Sequential(*list(copy.deepcopy(built).children())[:-2]).eval()  # no pooling
    assert run_check("feature_extractor", feature_map).mistake == "not_pooled"
    with_head = models.load_backbone("efficientnet_lite0").eval()
    assert run_check("feature_extractor", with_head).mistake == "imagenet_head_kept"
    random_init = models.load_backbone("efficientnet_lite0", pretrained=False).eval()
    random_init.reset_classifier(0)
    assert run_check("feature_extractor", random_init).mistake == "not_pretrained"
    right = copy.deepcopy(built).eval()
    assert run_check("feature_extractor", right).passed
    children = torch.nn.Sequential(*list(copy.deepcopy(built).children())[:-1]).eval()  # another correct way
    result = run_check("feature_extractor", children)
    assert result.passed, result.feedback


def test_extract_loop_mistakes_have_their_own_name():
    def two_passes(extractor, loader):  # features and labels from two passes over a shuffling loader
        extractor.eval()
        with torch.no_grad():
            feats = torch.cat([extractor(X) for X, _ in loader])
        return feats, torch.cat([y for _, y in loader])

    def dataset_labels(extractor, loader):  # labels in the dataset's order, features in the loader's
        extractor.eval()
        with torch.no_grad():
            feats = torch.cat([extractor(X) for X, _ in loader])
        return feats, torch.stack([loader.dataset[i][1] for i in range(len(loader.dataset))])

    def detached_with_grad(extractor, loader):  # no no_grad, the graph built then dropped
        extractor.eval()
        pairs = [(extractor(X).detach(), y) for X, y in loader]
        return torch.cat([f for f, _ in pairs]), torch.cat([y for _, y in pairs])

    def no_eval(extractor, loader):
        with torch.no_grad():
            pairs = [(extractor(X), y) for X, y in loader]
        return torch.cat([f for f, _ in pairs]), torch.cat([y for _, y in pairs])

    def last_batch(extractor, loader):
        extractor.eval()
        with torch.no_grad():
            for X, y in loader:
                feats, labels = extractor(X), y
        return feats, labels

    def one_pass(extractor, loader):  # a correct answer: features and labels of one pass, numpy lists
        extractor.eval()
        feats, labels = [], []
        with torch.no_grad():
            for X, y in loader:
                feats += list(extractor(X).numpy())
                labels += y.tolist()
        return np.stack(feats), np.array(labels)

    for answer, mistake in [
        (two_passes, "features_labels_misaligned"),
        (dataset_labels, "features_labels_misaligned"),
        (detached_with_grad, "no_grad_missing"),
        (no_eval, "extractor_train_mode"),
        (last_batch, "one_batch_kept"),
    ]:
        result = run_check("extract_loop", answer)
        assert not result.passed and result.mistake == mistake, (answer.__name__, result.mistake, result.feedback)
    result = run_check("extract_loop", one_pass)
    assert result.passed, result.feedback


# ----------------------------------------------------------------------------- probe_selection


def blobs(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 1, size=(10, 40))
    y = np.repeat(np.arange(10), n_per_class)
    return (centres[y] + rng.normal(0, 2.5, size=(len(y), 40))).astype(np.float32), y


X_TRAIN, Y_TRAIN = blobs(10, 1)
X_VAL, Y_VAL = blobs(10, 2)
X_TEST, Y_TEST = blobs(10, 3)
CS = [0.001, 0.01, 0.1, 1.0]


def select(score_on=(X_VAL, Y_VAL), fit_on=None, pick=None, C_final=None, make=None):
    make = make or (lambda C: features.fit_logistic_regression(X_TRAIN, Y_TRAIN, C=C))
    val_scores = [make(C).score(*score_on) for C in CS]
    best_C = pick(val_scores) if pick else CS[int(np.argmax(val_scores))]
    C = best_C if C_final is None else C_final
    clf = features.fit_logistic_regression(*(fit_on or (X_TRAIN, Y_TRAIN)), C=C)
    return [CS, val_scores, best_C, clf, X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, X_TEST, Y_TEST, clf.score(X_TEST, Y_TEST)]


def test_probe_selection_correct_answers_pass():
    assert run_check("probe_selection", *select()).passed
    # plain LogisticRegression, refitted on train + validation (allowed), ties broken towards the larger C
    Xtv, ytv = np.vstack([X_TRAIN, X_VAL]), np.concatenate([Y_TRAIN, Y_VAL])
    val_scores = [LogisticRegression(C=C, max_iter=1000).fit(X_TRAIN, Y_TRAIN).score(X_VAL, Y_VAL) for C in CS]
    best_C = sorted(zip(val_scores, CS))[-1][1]
    clf = LogisticRegression(C=best_C, max_iter=1000).fit(Xtv, ytv)
    args = [CS, val_scores, best_C, clf, X_TRAIN, Y_TRAIN, X_VAL, Y_VAL, X_TEST, Y_TEST, clf.score(X_TEST, Y_TEST)]
    result = run_check("probe_selection", *args)
    assert result.passed, result.feedback


def test_probe_selection_wrong_answers_are_named():
    fails_with(run_check("probe_selection", *select(score_on=(X_TEST, Y_TEST))), "chose C by test accuracy")
    both = (np.vstack([X_TRAIN, X_TEST]), np.concatenate([Y_TRAIN, Y_TEST]))
    fails_with(run_check("probe_selection", *select(fit_on=both)), "refitted on train + test")
    fails_with(run_check("probe_selection", *select(pick=lambda s: CS[0])), "not the candidate with the best")
    fails_with(run_check("probe_selection", *select(C_final=1.0 if select()[2] != 1.0 else 0.1)), "not your best_C")
    fails_with(run_check("probe_selection", *select(score_on=(X_TRAIN, Y_TRAIN))), "training accuracies")
    args = select()
    args[-1] *= 100
    fails_with(run_check("probe_selection", *args), "fraction")
    args = select()
    args[6], args[7] = X_TEST, Y_TEST  # "validation" features taken from the test split
    fails_with(run_check("probe_selection", *args), "validation features are test features")


def test_probe_selection_leaks_are_named_by_what_leaked():
    args = select()
    noisy_test = X_TEST + np.float32(1e-6) * np.random.default_rng(0).normal(size=X_TEST.shape).astype(np.float32)
    args[6], args[7] = noisy_test, Y_TEST  # the test images as validation, extracted in another batch
    result = run_check("probe_selection", *args)
    assert not result.passed and result.mistake == "validation_is_test", result.feedback
    args = select(score_on=(X_TEST, Y_TEST))
    assert run_check("probe_selection", *args).mistake == "C_chosen_on_test"
    both = (np.vstack([X_TRAIN, X_TEST]), np.concatenate([Y_TRAIN, Y_TEST]))
    assert run_check("probe_selection", *select(fit_on=both)).mistake == "refit_on_test"
    assert run_check("probe_selection", *select(score_on=(X_TRAIN, Y_TRAIN))).mistake == "C_chosen_on_train"
    assert run_check("probe_selection", *select(pick=lambda s: CS[0])).mistake == "best_C_not_argmax"
    args = select()
    args[0], args[1] = [0.1], [args[1][0]]  # one candidate: nothing compared
    assert run_check("probe_selection", *args).mistake == "no_comparison"
    args = select()
    args[-1] = args[3].score(X_TRAIN, Y_TRAIN)
    assert run_check("probe_selection", *args).mistake == "test_acc_on_train"


@pytest.mark.real_data
def test_split_leakage_names_the_split_a_set_came_from():
    from tl_helpers.data import load_eurosat

    data = load_eurosat(progress=False)
    train, test = data["train"].per_class(20, seed=0), data["test"].per_class(20, seed=0)
    assert run_check("split_leakage", train, test).passed
    result = run_check("split_leakage", train, data["val"].per_class(20, seed=0))  # the test set from data["val"]
    assert not result.passed and result.mistake == "test_from_val_split", result.feedback
    result = run_check("split_leakage", data["train"].per_class(20, seed=1), train)
    assert not result.passed and result.mistake == "train_test_overlap", result.feedback
    result = run_check("split_leakage", test, data["test"].per_class(20, seed=1))
    assert not result.passed and result.mistake in {"train_test_overlap", "train_from_test_split"}, result.feedback


def test_split_leakage_sees_overlap_by_content():
    from tl_helpers.data import ImageTensors

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.arange(8) % 2
    train = ImageTensors(images[:6], labels[:6], [f"x/train_{i}.jpg" for i in range(6)])
    renamed = ImageTensors(images[4:], labels[4:], [f"x/test_{i}.jpg" for i in range(4)])  # 2 training images
    result = run_check("split_leakage", train, renamed)
    assert not result.passed and result.mistake == "train_test_overlap", result.feedback
    clean = ImageTensors(images[6:], labels[6:], [f"x/test_{i}.jpg" for i in range(2)])
    assert run_check("split_leakage", train, clean).passed
