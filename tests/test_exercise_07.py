"""Exercise 07 (when transfer helps): wrong answers written the way learners write them, each named by its
feedback; correct answers written differently from the solution, which pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tl_helpers import features
from tl_helpers.checks import run_check
from tl_helpers.data import load_digits_public

GRADED_VARIANTS = [
    (
        "07_when_transfer_helps_exercises",
        "    return classes[(F.normalize(X_query.float(), dim=1) @ means.T).argmax(1)]",
        "    return (F.normalize(X_query.float(), dim=1) @ means.T).argmax(1)",
        "few_shot_ncm",
        "position of the nearest mean",
    ),
    (
        "07_when_transfer_helps_exercises",
        "    return final.predict(digit_images.reshape(len(digit_images), -1))",
        "    return final.predict_proba(digit_images.reshape(len(digit_images), -1))",
        "digits_strategy",
        "one score per class",
    ),
]


# ----------------------------------------------------------------------------- digits_strategy


def flat(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1)


def test_digits_private_part_is_disjoint_from_the_public_one():
    from sklearn.datasets import load_digits

    from tl_helpers.checks.transfer import private_digits
    from tl_helpers.data import digits_public_indices

    X_pub, _ = load_digits_public()
    X_priv, _ = private_digits()
    assert len(X_pub) + len(X_priv) == len(load_digits().target)
    assert len(np.unique(digits_public_indices())) == len(X_pub)
    public_rows = {r.tobytes() for r in flat(X_pub)}
    assert sum(r.tobytes() in public_rows for r in flat(X_priv)) < 20  # only the few digits that repeat exactly


def test_digits_raw_pixel_logistic_regression_passes():
    X, y = load_digits_public()
    clf = features.fit_logistic_regression(flat(X), y, seed=0)
    result = run_check("digits_strategy", lambda images: clf.predict(flat(images)))
    assert result.passed, result.feedback


def test_digits_decision_needs_the_comparison():
    X, y = load_digits_public()
    clf = features.fit_logistic_regression(flat(X), y, seed=0)

    def predict(images):
        return clf.predict(flat(images))

    compared = {"raw pixels": 0.97, "ImageNet features": 0.86}
    result = run_check("digits_strategy", predict, compared)
    assert result.passed, result.feedback
    for scores, mistake in [
        ({"raw pixels": 0.97}, "no_comparison"),  # the right predictor, but nothing compared
        ([0.97, 0.86], "no_comparison"),
        ({"raw pixels": 97.0, "ImageNet features": 86.0}, "percentage"),
    ]:
        result = run_check("digits_strategy", predict, scores)
        assert not result.passed and result.mistake == mistake, (scores, result.mistake, result.feedback)
    imagenet_chosen = features.fit_logistic_regression(flat(X)[:, ::4], y, seed=0)  # a weaker candidate chosen
    result = run_check(
        "digits_strategy", lambda images: imagenet_chosen.predict(flat(images)[:, ::4]), {"a": 0.99, "b": 0.8}
    )
    assert not result.passed and result.mistake == "choice_contradicts_scores", result.feedback


def test_digits_svm_on_raw_pixels_passes():
    from sklearn.svm import SVC

    X, y = load_digits_public()
    svm = SVC().fit(flat(X), y)
    result = run_check("digits_strategy", lambda images: svm.predict(flat(images)))
    assert result.passed, result.feedback


def test_digits_small_net_from_scratch_passes():
    X, y = load_digits_public()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(300):  # full batch, a second or two
        opt.zero_grad()
        F.cross_entropy(net(Xt), yt).backward()
        opt.step()

    def predict(images):
        net.eval()
        with torch.no_grad():
            return net(torch.from_numpy(images)).argmax(1)

    result = run_check("digits_strategy", predict)
    assert result.passed, result.feedback


@pytest.mark.slow
def test_digits_imagenet_features_probe_is_below_the_no_transfer_baseline():
    from tl_helpers import models

    backbone = models.load_backbone("efficientnet_lite0").eval()

    def embed(images):
        x = F.interpolate(torch.from_numpy(images)[:, None], size=(32, 32), mode="bicubic", align_corners=False)
        x = (x.clamp(0, 1).repeat(1, 3, 1, 1) - 0.5) / 0.5
        with torch.no_grad():
            return features.pooled_features(backbone, x).numpy()

    X, y = load_digits_public()
    clf = features.fit_logistic_regression(embed(X), y, seed=0)
    result = run_check("digits_strategy", lambda images: clf.predict(embed(images)))
    assert not result.passed and "no-transfer baseline" in result.feedback, result.feedback


def test_digits_one_example_per_class_is_below_the_baseline():
    from sklearn.neighbors import KNeighborsClassifier

    X, y = load_digits_public()
    first = [int(np.flatnonzero(y == c)[0]) for c in range(10)]  # "few-shot is enough"
    knn = KNeighborsClassifier(1).fit(flat(X)[first], y[first])
    result = run_check("digits_strategy", lambda images: knn.predict(flat(images)))
    assert not result.passed and "below" in result.feedback


def test_digits_wrong_outputs_are_named():
    X, y = load_digits_public()
    clf = features.fit_logistic_regression(flat(X), y, seed=0)
    probs = run_check("digits_strategy", lambda images: clf.predict_proba(flat(images)))
    assert not probs.passed and "one score per class" in probs.feedback
    result = run_check("digits_strategy", clf.predict(flat(X)))
    assert not result.passed and "not its result" in result.feedback


def test_digits_predictor_expecting_flat_input_is_the_learners_bug():
    X, y = load_digits_public()
    clf = features.fit_logistic_regression(flat(X), y, seed=0)

    def predict(images):
        return clf.predict(images)  # 8 x 8 images handed straight to a classifier fitted on 64 values

    result = run_check("digits_strategy", predict)
    assert not result.passed
    assert "Your predict_digits raised" in result.feedback and "clf.predict(images)" in result.feedback


# ----------------------------------------------------------------------------- few_shot_ncm


def solution_ncm(X_support, y_support, X_query):
    support = F.normalize(X_support.float(), dim=1)
    classes = torch.unique(y_support)
    means = F.normalize(torch.stack([support[y_support == c].mean(0) for c in classes]), dim=1)
    return classes[(F.normalize(X_query.float(), dim=1) @ means.T).argmax(1)]


def loop_ncm(X_support, y_support, X_query):  # another correct way: loops and cosine_similarity
    means = {}
    for c in sorted(set(y_support.tolist())):
        rows = X_support[y_support == c]
        means[c] = (rows / rows.norm(dim=1, keepdim=True)).mean(0)
    labels = []
    for q in X_query:
        sims = {c: float(F.cosine_similarity(q, m, dim=0)) for c, m in means.items()}
        labels.append(max(sims, key=sims.get))
    return torch.tensor(labels)


def numpy_ncm(X_support, y_support, X_query):  # another correct way: NumPy
    Xs = X_support.numpy() / np.linalg.norm(X_support.numpy(), axis=1, keepdims=True)
    Xq = X_query.numpy() / np.linalg.norm(X_query.numpy(), axis=1, keepdims=True)
    ys = y_support.numpy()
    classes = np.unique(ys)
    means = np.stack([Xs[ys == c].mean(0) for c in classes])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return classes[(Xq @ means.T).argmax(1)]


def euclidean_ncm(X_support, y_support, X_query):
    classes = torch.unique(y_support)
    means = torch.stack([X_support[y_support == c].mean(0) for c in classes])
    return classes[torch.cdist(X_query, means).argmin(1)]


def argmin_ncm(X_support, y_support, X_query):
    support = F.normalize(X_support, dim=1)
    classes = torch.unique(y_support)
    means = F.normalize(torch.stack([support[y_support == c].mean(0) for c in classes]), dim=1)
    return classes[(F.normalize(X_query, dim=1) @ means.T).argmin(1)]


def position_ncm(X_support, y_support, X_query):
    support = F.normalize(X_support, dim=1)
    means = F.normalize(torch.stack([support[y_support == c].mean(0) for c in torch.unique(y_support)]), dim=1)
    return (F.normalize(X_query, dim=1) @ means.T).argmax(1)


def one_mean_ncm(X_support, y_support, X_query):
    mean = F.normalize(X_support, dim=1).mean(0, keepdim=True)
    best = (F.normalize(X_query, dim=1) @ mean.T).argmax(1)
    return y_support[best]


def unit_euclidean_ncm(X_support, y_support, X_query):  # another correct way: distance between unit vectors
    support = F.normalize(X_support, dim=1)
    classes = torch.unique(y_support)
    means = F.normalize(torch.stack([support[y_support == c].mean(0) for c in classes]), dim=1)
    return classes[torch.cdist(F.normalize(X_query, dim=1), means).argmin(1)]


def not_renormalised_ncm(X_support, y_support, X_query):  # means of unit vectors, used as they are
    support = F.normalize(X_support, dim=1)
    classes = torch.unique(y_support)
    means = torch.stack([support[y_support == c].mean(0) for c in classes])
    return classes[(F.normalize(X_query, dim=1) @ means.T).argmax(1)]


def not_renormalised_euclidean_ncm(X_support, y_support, X_query):
    support = F.normalize(X_support, dim=1)
    classes = torch.unique(y_support)
    means = torch.stack([support[y_support == c].mean(0) for c in classes])
    return classes[torch.cdist(F.normalize(X_query, dim=1), means).argmin(1)]


def raw_mean_normalised_ncm(X_support, y_support, X_query):  # normalises the mean of the raw features only
    classes = torch.unique(y_support)
    means = F.normalize(torch.stack([X_support[y_support == c].mean(0) for c in classes]), dim=1)
    return classes[(F.normalize(X_query, dim=1) @ means.T).argmax(1)]


def raw_dot_ncm(X_support, y_support, X_query):
    classes = torch.unique(y_support)
    means = torch.stack([X_support[y_support == c].mean(0) for c in classes])
    return classes[(X_query @ means.T).argmax(1)]


def in_place_ncm(X_support, y_support, X_query):
    X_support /= X_support.norm(dim=1, keepdim=True)
    X_query /= X_query.norm(dim=1, keepdim=True)
    return solution_ncm(X_support, y_support, X_query)


@pytest.mark.parametrize(
    "answer, mistake",
    [
        (not_renormalised_ncm, "ncm_means_not_renormalised"),
        (not_renormalised_euclidean_ncm, "ncm_means_not_renormalised_euclidean"),
        (raw_mean_normalised_ncm, "ncm_support_not_normalised"),
        (raw_dot_ncm, "ncm_dot_raw"),
        (euclidean_ncm, "ncm_euclidean_raw"),
        (argmin_ncm, "ncm_least_similar"),
        (position_ncm, "ncm_position_not_label"),
        (one_mean_ncm, "ncm_one_mean"),
        (in_place_ncm, "inputs_modified"),
    ],
)
def test_few_shot_mistakes_have_their_own_name(answer, mistake):
    result = run_check("few_shot_ncm", answer)
    assert not result.passed and result.mistake == mistake, (result.mistake, result.feedback)
    if mistake == "ncm_means_not_renormalised":  # it did compute one mean per class: not told otherwise
        assert "one mean per class" not in result.feedback and "normalise" in result.feedback


@pytest.mark.parametrize("answer", [solution_ncm, loop_ncm, numpy_ncm, unit_euclidean_ncm])
def test_few_shot_correct_answers_pass(answer):
    result = run_check("few_shot_ncm", answer)
    assert result.passed, result.feedback


@pytest.mark.parametrize(
    "answer, phrase",
    [
        (euclidean_ncm, "Euclidean nearest mean"),
        (argmin_ncm, "*least* similar"),
        (position_ncm, "position of the nearest mean"),
        (one_mean_ncm, "same label"),
        (features.nearest_class_mean, "write the rule yourself"),
    ],
)
def test_few_shot_wrong_answers_are_named(answer, phrase):
    result = run_check("few_shot_ncm", answer)
    assert not result.passed
    assert phrase in result.feedback, result.feedback
