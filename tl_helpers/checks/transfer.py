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


@register("digits_strategy", 4, "a strategy for a distant domain, scored on private digits")
def _check_digits_strategy(predict_digits: Any) -> CheckResult:
    if not callable(predict_digits):
        return fail("Pass your function predict_digits(images) (N x 8 x 8 in [0, 1] -> N labels), not its result.")
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
        return fail("predict_digits returns one score per class: return labels (the argmax of each row).")
    if pred.shape != (len(y),):
        return fail(f"Expected {len(y)} labels for {len(y)} images, got an array of shape {pred.shape}.")
    acc = float(np.mean(pred.astype(np.int64) == y))
    baselines = ", ".join(f"{k} {v:.1%}" for k, v in DIGITS_BASELINES.items())
    if acc < DIGITS_PASS_ACCURACY:
        return fail(
            f"{acc:.1%} on {len(y)} private digits, below {DIGITS_PASS_ACCURACY:.0%}, the level of the "
            f"no-transfer baseline (measured: {baselines}). On a domain this far from ImageNet, compare every "
            "candidate with a no-transfer baseline on a validation part of the public digits before choosing."
        )
    return ok(f"{acc:.1%} on {len(y)} private digits (measured baselines: {baselines}).")


def _reference_ncm(Xs: torch.Tensor, ys: torch.Tensor, Xq: torch.Tensor) -> torch.Tensor:
    from tl_helpers.features import nearest_class_mean

    return nearest_class_mean(Xs, ys, Xq)


def _few_shot_case(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Support and query sets on which cosine and Euclidean nearest-mean rules disagree (labels 2, 5, 7)."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(3, 16, generator=g), dim=1)
    scales = torch.tensor([1.0, 6.0, 0.3])  # very different norms per class
    labels = torch.tensor([2, 5, 7])
    Xs = torch.cat([directions[k] * scales[k] * (1 + 0.3 * torch.rand(4, 1, generator=g)) for k in range(3)])
    Xs = Xs + 0.05 * torch.randn(Xs.shape, generator=g)
    ys = labels.repeat_interleave(4)
    query_scale = torch.tensor([6.0, 0.3, 1.0])  # queries at another class's norm
    Xq = torch.cat([directions[k] * query_scale[k] * (1 + 0.2 * torch.rand(5, 1, generator=g)) for k in range(3)])
    Xq = Xq + 0.05 * torch.randn(Xq.shape, generator=g)
    return Xs, ys, Xq


@register("few_shot_ncm", 3, "nearest class mean by cosine similarity, written by hand")
def _check_few_shot_ncm(nearest_class_mean: Any) -> CheckResult:
    from tl_helpers import features

    if not callable(nearest_class_mean):
        return fail("Pass your function nearest_class_mean(X_support, y_support, X_query).")
    if nearest_class_mean is features.nearest_class_mean:
        return fail("That is the course's features.nearest_class_mean: write the rule yourself.")
    Xs, ys, Xq = _few_shot_case(0)
    copies = (Xs.clone(), ys.clone(), Xq.clone())
    try:
        got = nearest_class_mean(*copies)
    except NotImplementedError:
        raise
    except Exception as exc:
        return learner_error(exc, "nearest_class_mean")
    got = torch.as_tensor(got).flatten()
    want = _reference_ncm(Xs, ys, Xq)
    if got.shape != want.shape:
        return fail(f"Expected one label per query ({len(want)}), got shape {tuple(got.shape)}.")
    if torch.equal(got, want):
        return ok("One mean per class of the L2-normalised support features, each query labelled by cosine similarity.")
    if set(got.tolist()) <= {0, 1, 2} and torch.equal(torch.tensor([2, 5, 7])[got.long()], want):
        return fail(
            "You return the position of the nearest mean (0, 1, 2...), not the class label: with labels "
            "2, 5, 7 map positions back through the sorted list of classes (torch.unique(y_support))."
        )
    if len(set(got.tolist())) == 1:
        return fail("Every query gets the same label: compute one mean per class, not one over all support images.")
    classes = torch.unique(ys)
    raw_means = torch.stack([Xs[ys == c].mean(0) for c in classes])
    if torch.equal(got, classes[torch.cdist(Xq, raw_means).argmin(1)]):
        return fail(
            "That is the Euclidean nearest mean of the raw features: large-norm features dominate. L2-normalise "
            "the features (and the means) and compare by cosine similarity (a dot product of unit vectors)."
        )
    norm = torch.nn.functional.normalize
    cos = norm(Xq, dim=1) @ norm(torch.stack([norm(Xs, dim=1)[ys == c].mean(0) for c in classes]), dim=1).T
    if torch.equal(got, classes[cos.argmin(1)]):
        return fail("You pick the *least* similar class mean: take the argmax of the cosine similarity.")
    return fail(
        f"{int((got == want).sum())} of {len(want)} queries get the nearest-class-mean label. Normalise the "
        "support and query features, average per class, normalise the means, take the most similar."
    )


exercise(
    "digits_strategy",
    "These 8x8 grey digits are far from ImageNet's photos: pretrained features may help less than you think. "
    "Split the public digits into a fitting and a validation part and compare at least one no-transfer "
    "candidate with the pretrained one before you choose.",
    "`sklearn.model_selection.train_test_split(..., stratify=y)` for the validation part; "
    "`features.fit_logistic_regression(X, y)` fits a standardised logistic regression; raw pixels are "
    "`images.reshape(len(images), -1)`; notebook 07 shows how digits become 3-channel images for the backbone.",
    "def predict_digits(images):\n"
    "    X = ...  # the same representation you fitted on\n"
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
