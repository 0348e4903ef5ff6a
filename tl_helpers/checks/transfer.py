"""Checks of "when transfer helps" (exercises 07): a strategy for a distant domain graded on private digits,
and nearest-class-mean few-shot classification written by hand.

The digits check scores the learner's predictor on the 797 scikit-learn digits that
:func:`tl_helpers.data.load_digits_public` never returns; its threshold comes from measured baselines
(see :data:`DIGITS_BASELINES`). When the grader is given the instructor's own digits (``grade --private-data``,
:mod:`tl_helpers.private_data`), it scores on those instead (:func:`graded_digits`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tl_helpers.checks.core import CheckResult, fail, learner_error, ok, register
from tl_helpers.checks.registry import exercise

__all__ = ["DIGITS_BASELINES", "DIGITS_PASS_ACCURACY", "graded_digits", "private_digits"]

DIGITS_BASELINES: dict[str, float] = {
    "raw pixels + logistic regression": 0.970,
    "raw pixels + RBF SVM": 0.987,
    "ImageNet features + logistic regression": 0.858,
}
"""Accuracy on the 797 private digits after fitting on the 1,000 public ones (seed 0): raw pixels
(64 values, standardised, ``features.fit_logistic_regression``) and ImageNet features (EfficientNet-Lite0
pooled features of the digits upsampled to 32 px, same classifier; 11 s of feature extraction on
2 CPU cores) and scikit-learn's default ``SVC()`` on raw pixels.
"""
DIGITS_PASS_ACCURACY = 0.95
"""Full marks from here: at least the no-transfer baseline, less a point for other classifiers and seeds."""


def private_digits() -> tuple[np.ndarray, np.ndarray]:
    """The private part of scikit-learn's digits: ``N x 8 x 8`` float32 in [0, 1] and labels (797 digits)."""
    from sklearn.datasets import load_digits

    from tl_helpers.data import digits_public_indices

    digits = load_digits()
    rest = np.setdiff1d(np.arange(len(digits.target)), digits_public_indices())
    return (digits.images[rest] / 16.0).astype(np.float32), digits.target[rest].astype(np.int64)


def graded_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits ``digits_strategy`` scores on: the instructor's (``TL_PRIVATE_DATA``), else :func:`private_digits`."""
    from tl_helpers.private_data import active_private_data

    private = active_private_data()
    if private is not None and private.digits is not None:
        X, y = private.digits
        return X.copy(), y.copy()
    return private_digits()


def _check_comparison(scores: Any) -> CheckResult | None:
    """What is wrong with the learner's ``scores`` {candidate: validation accuracy} (None: a real comparison)."""
    if not isinstance(scores, dict) or len(scores) < 2:
        return fail(
            "scores should hold the validation accuracy of at least two candidates, {name: accuracy}, e.g. one "
            "without transfer (raw pixels) and one with it (ImageNet features): the choice must come from "
            "comparing them on a validation part of the public digits.",
            mistake="no_comparison",
        )
    try:
        values = {str(k): float(v) for k, v in scores.items()}
    except (TypeError, ValueError):
        return fail("scores should map each candidate's name to one accuracy (a number).", mistake="wrong_type")
    if any(v > 1.0 for v in values.values()):
        return fail(
            "Give the accuracies in scores as fractions between 0 and 1, not percentages.", mistake="percentage"
        )
    if any(v < 0.0 for v in values.values()) or len(set(values.values())) == 1 and len(values) > 2:
        return fail(
            f"scores {values} do not look like measured validation accuracies: fit each candidate on one part "
            "of the public digits and score it on the other.",
            mistake="scores_not_measured",
        )
    return None


@register("digits_strategy", 4, "a strategy for a distant domain, scored on private digits")
def _check_digits_strategy(predict_digits: Any, scores: Any = None) -> CheckResult:
    if scores is not None:  # the comparison the exercise asks for, before the predictor is scored
        problem = _check_comparison(scores)
        if problem is not None:
            return problem
    if not callable(predict_digits):
        return fail(
            "Pass your function predict_digits(images) (N x 8 x 8 in [0, 1] -> N labels), not its result.",
            mistake="not_a_function",
        )
    X, y = graded_digits()
    given = X.copy()
    try:
        out = predict_digits(given)
    except NotImplementedError:
        raise
    except Exception as exc:
        return learner_error(exc, "predict_digits")
    pred = np.asarray(out.detach().cpu() if isinstance(out, torch.Tensor) else out)
    if pred.ndim == 2 and pred.shape == (len(y), 10):
        return fail(
            "predict_digits returns one score per class: return labels (the argmax of each row).",
            mistake="scores_not_labels",
        )
    if pred.shape != (len(y),):
        return fail(
            f"Expected {len(y)} labels for {len(y)} images, got an array of shape {pred.shape}.", mistake="wrong_shape"
        )
    acc = float(np.mean(pred.astype(np.int64) == y))
    baselines = ", ".join(f"{k} {v:.1%}" for k, v in DIGITS_BASELINES.items())
    if scores is not None:
        best = max(scores, key=lambda k: float(scores[k]))
        if acc < float(scores[best]) - 0.06:
            return fail(
                f"Your own comparison says {str(best)!r} is best ({float(scores[best]):.1%} on validation), but your "
                f"predict_digits gets {acc:.1%} on {len(y)} private digits, far below it: predict with the "
                "candidate that won your comparison (refitted the same way), not another one.",
                mistake="choice_contradicts_scores",
            )
    if acc < DIGITS_PASS_ACCURACY:
        return fail(
            f"{acc:.1%} on {len(y)} private digits, below {DIGITS_PASS_ACCURACY:.0%}, the level of the "
            f"no-transfer baseline (measured: {baselines}). On a domain this far from ImageNet, compare every "
            "candidate with a no-transfer baseline on a validation part of the public digits before choosing.",
            mistake="below_no_transfer_baseline",
        )
    return ok(f"{acc:.1%} on {len(y)} private digits (measured baselines: {baselines}).")


def _reference_ncm(Xs: torch.Tensor, ys: torch.Tensor, Xq: torch.Tensor) -> torch.Tensor:
    from tl_helpers.features import nearest_class_mean

    return nearest_class_mean(Xs, ys, Xq)


def _few_shot_case(seed: int = 850) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Support and query sets (labels 2, 5, 7) on which every nearest-mean rule of :func:`_ncm_variants` differs.

    Support features have very different norms (within and across classes) and the classes have different
    spreads, so the mean of raw features points elsewhere than the mean of unit features, and the means of
    unit features have different lengths; seed 850 was searched so that each wrong rule mislabels at least
    6 of the 15 queries and the right rule's two best similarities differ by at least 0.012 for every query.
    """
    g = torch.Generator().manual_seed(seed)
    normalize = torch.nn.functional.normalize
    labels, dim = torch.tensor([2, 5, 7]), 16
    directions = normalize(torch.randn(3, dim, generator=g), dim=1)
    spread = torch.tensor([0.1, 1.2, 0.5])
    scale = torch.tensor([1.0, 6.0, 0.3])
    support, support_labels = [], []
    for k in range(3):
        unit = normalize(directions[k] + spread[k] * torch.randn(4, dim, generator=g), dim=1)
        support.append(unit * torch.exp(1.5 * torch.randn(4, 1, generator=g)) * scale[k])
        support_labels.append(labels[k].repeat(4))
    Xq = normalize(torch.randn(15, dim, generator=g) * 0.6 + directions.repeat_interleave(5, 0), dim=1)
    Xq = Xq * torch.exp(torch.randn(15, 1, generator=g)) * 3
    return torch.cat(support), torch.cat(support_labels), Xq


def _ncm_variants(Xs: torch.Tensor, ys: torch.Tensor, Xq: torch.Tensor) -> dict[str, torch.Tensor]:
    """The labels each plausible wrong nearest-mean rule gives (mistake name -> labels)."""
    normalize = torch.nn.functional.normalize
    classes = torch.unique(ys)
    unit = normalize(Xs, dim=1)
    unit_means = torch.stack([unit[ys == c].mean(0) for c in classes])
    raw_means = torch.stack([Xs[ys == c].mean(0) for c in classes])
    query = normalize(Xq, dim=1)
    return {
        "ncm_euclidean_raw": classes[torch.cdist(Xq, raw_means).argmin(1)],
        "ncm_dot_raw": classes[(Xq @ raw_means.T).argmax(1)],
        "ncm_means_not_renormalised": classes[(query @ unit_means.T).argmax(1)],
        "ncm_means_not_renormalised_euclidean": classes[torch.cdist(query, unit_means).argmin(1)],
        "ncm_support_not_normalised": classes[(query @ normalize(raw_means, dim=1).T).argmax(1)],
        "ncm_least_similar": classes[(query @ normalize(unit_means, dim=1).T).argmin(1)],
    }


_NCM_MESSAGES = {
    "ncm_euclidean_raw": "That is the Euclidean nearest mean of the raw features: large-norm features dominate. "
    "L2-normalise the features (and the means) and compare by cosine similarity (a dot product of unit vectors).",
    "ncm_dot_raw": "You compare raw dot products with raw class means: a class whose features are long wins "
    "whatever the direction. L2-normalise the support and query features and the class means first.",
    "ncm_means_not_renormalised": "Your class means are averages of unit vectors, but you did not normalise "
    "the means again: an average of unit vectors is shorter than 1 (shorter for a class that is spread "
    "out), so your dot product is no longer the cosine similarity and favours tight classes. L2-normalise "
    "each class mean before comparing.",
    "ncm_means_not_renormalised_euclidean": "You compare queries with the class means by Euclidean distance, but "
    "the means (averages of unit vectors) are not unit vectors themselves, so this is not the cosine rule. "
    "L2-normalise each class mean, then take the largest cosine similarity.",
    "ncm_support_not_normalised": "You averaged the raw support features and normalised only the mean: a "
    "support image with a long feature vector outweighs the others. Normalise each support feature first, "
    "then average per class, then normalise the means.",
    "ncm_least_similar": "You pick the *least* similar class mean: take the argmax of the cosine similarity.",
}


@register("few_shot_ncm", 3, "nearest class mean by cosine similarity, written by hand")
def _check_few_shot_ncm(nearest_class_mean: Any) -> CheckResult:
    from tl_helpers import features

    if not callable(nearest_class_mean):
        return fail("Pass your function nearest_class_mean(X_support, y_support, X_query).", mistake="not_a_function")
    if nearest_class_mean is features.nearest_class_mean:
        return fail(
            "That is the course's features.nearest_class_mean: write the rule yourself.", mistake="course_function"
        )
    Xs, ys, Xq = _few_shot_case()
    copies = (Xs.clone(), ys.clone(), Xq.clone())
    try:
        got = nearest_class_mean(*copies)
    except NotImplementedError:
        raise
    except Exception as exc:
        return learner_error(exc, "nearest_class_mean")
    if not (torch.equal(copies[0], Xs) and torch.equal(copies[2], Xq)):
        return fail(
            "nearest_class_mean changed the support or query features in place (e.g. an in-place normalisation): "
            "compute new tensors instead, the caller's features must stay as they were.",
            mistake="inputs_modified",
        )
    got = torch.as_tensor(np.asarray(got.detach().cpu() if isinstance(got, torch.Tensor) else got)).flatten()
    want = _reference_ncm(Xs, ys, Xq)
    if got.shape != want.shape:
        return fail(f"Expected one label per query ({len(want)}), got shape {tuple(got.shape)}.", mistake="wrong_shape")
    got = got.long()
    if torch.equal(got, want):
        return ok("One mean per class of the L2-normalised support features, each query labelled by cosine similarity.")
    classes = torch.unique(ys)
    if set(got.tolist()) <= set(range(len(classes))) and torch.equal(classes[got], want):
        return fail(
            "You return the position of the nearest mean (0, 1, 2...), not the class label: with labels "
            "2, 5, 7 map positions back through the sorted list of classes (torch.unique(y_support)).",
            mistake="ncm_position_not_label",
        )
    for mistake, labels in _ncm_variants(Xs, ys, Xq).items():
        if torch.equal(got, labels):
            return fail(_NCM_MESSAGES[mistake], mistake=mistake)
    if len(set(got.tolist())) == 1:
        return fail(
            "Every query gets the same label: compute one mean per class, not one over all support images.",
            mistake="ncm_one_mean",
        )
    return fail(
        f"{int((got == want).sum())} of {len(want)} queries get the nearest-class-mean label. Normalise the "
        "support and query features, average per class, normalise the means, take the most similar.",
        mistake="ncm_wrong_labels",
    )


exercise(
    "digits_strategy",
    "These 8x8 grey digits are far from ImageNet's photos: pretrained features may help less than you think. "
    "Split the public digits into a fitting and a validation part and compare at least one no-transfer "
    "candidate with the pretrained one before you choose.",
    "`sklearn.model_selection.train_test_split(..., stratify=y)` for the validation part; "
    "`features.fit_logistic_regression(X, y)` fits a standardised logistic regression; raw pixels are "
    "`images.reshape(len(images), -1)`; notebook 07 shows how digits become 3-channel images for the backbone.",
    "scores = {}  # candidate name -> accuracy on your validation part\n"
    "for name, X in {<no-transfer representation>, <pretrained representation>}.items(): scores[name] = ...\n"
    "def predict_digits(images):\n"
    "    X = ...  # the representation of the candidate that won, refitted\n"
    "    return chosen_classifier.predict(X)",
)
exercise(
    "few_shot_ncm",
    "Each class is summarised by the average direction of its few support features; a query gets the class "
    "whose average direction is closest in angle.",
    "`torch.nn.functional.normalize(X, dim=1)` makes unit rows; `torch.unique(y_support)` lists the classes; "
    "a matrix product of unit vectors is the cosine similarity; `.argmax(1)` picks per query.",
    "classes = torch.unique(y_support)\n"
    "means = torch.stack([... for c in classes])  # mean of the normalised support rows of class c\n"
    "similarity = normalize(X_query, dim=1) @ normalize(means, dim=1).T\n"
    "return classes[...]",
)
