"""Checks of notebook 02's exercises: a frozen feature extractor and a linear probe."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from tl_helpers.checks.core import (
    CheckResult,
    batchnorms,
    fail,
    ok,
    probe_images,
    reference_extractor,
    register,
)

__all__: list[str] = []  # checks register themselves in CHECKS; nothing else is public


@register("feature_extractor", 2, "a pretrained backbone that returns pooled features, in eval mode")
def _check_feature_extractor(extractor: Any) -> CheckResult:
    if not isinstance(extractor, nn.Module):
        return fail(f"Expected an nn.Module, got {type(extractor).__name__}.")
    model = copy.deepcopy(extractor).cpu().float()
    before = {n: m.running_mean.clone() for n, m in batchnorms(model) if m.running_mean is not None}
    x = probe_images(4)
    with torch.no_grad():
        out = model(x)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == 4:
        return fail(
            f"The output is a feature map {tuple(out.shape)}, not a vector per image: pool it "
            "(timm: reset_classifier(0) keeps the global average pooling)."
        )
    if out.ndim != 2:
        return fail(f"Expected features N x D, got shape {tuple(out.shape)}.")
    if out.shape[1] == 1000:
        return fail(
            "1000 outputs: these are still ImageNet class scores. Remove the head "
            "(model.reset_classifier(0), load_backbone(..., num_classes=0) or nn.Identity())."
        )
    moved = any(not torch.equal(m.running_mean, before[n]) for n, m in batchnorms(model) if n in before)
    if moved:
        return fail(
            "The extractor is in train mode: BatchNorm used the batch statistics and updated its "
            "running statistics. Call extractor.eval() before extracting features."
        )
    if out.shape[1] == 1280:
        with torch.no_grad():
            ref = reference_extractor()(x)
        if not torch.allclose(out, ref, atol=1e-3, rtol=1e-3):
            return fail(
                "These 1280 features are not those of the pretrained EfficientNet-Lite0: did you load "
                "the ImageNet weights (pretrained=True)? Random-init features are far worse."
            )
    return ok(f"Pooled features of size {out.shape[1]} per image, in eval mode.")


@register("probe_accuracy", 2, "test accuracy of a linear probe, measured on the test features")
def _check_probe_accuracy(acc: Any, clf: Any, X_train: Any, y_train: Any, X_test: Any, y_test: Any) -> CheckResult:
    import numpy as np

    acc = float(acc)
    Xtr, Xte = np.asarray(X_train, dtype=np.float64), np.asarray(X_test, dtype=np.float64)
    true_test = float(np.mean(clf.predict(np.asarray(X_test)) == np.asarray(y_test)))
    true_train = float(np.mean(clf.predict(np.asarray(X_train)) == np.asarray(y_train)))
    rows_train = {r.tobytes() for r in np.round(Xtr, 5)}
    shared = sum(r.tobytes() in rows_train for r in np.round(Xte, 5))
    if shared:
        return fail(
            f"Data leakage: {shared} test feature row(s) also appear in the training features. "
            "Extract the test features from a separate split."
        )
    if acc > 1.0 and abs(acc / 100 - true_test) < 0.01:
        return fail("Report accuracy as a fraction between 0 and 1, not a percentage.")
    if abs(acc - true_test) <= 0.005:
        if true_test < 0.5:
            return fail(f"Test accuracy {true_test:.1%} is low for pretrained features; check the features.")
        return ok(f"Linear probe test accuracy {true_test:.1%} (training accuracy {true_train:.1%}).")
    if abs(acc - true_train) <= 0.005:
        return fail(
            f"Accuracy computed on the wrong split: {acc:.1%} is the *training* accuracy; the test "
            f"accuracy is {true_test:.1%}. Score on X_test, y_test."
        )
    return fail(f"Your accuracy {acc:.1%} does not match this classifier on the test features ({true_test:.1%}).")
