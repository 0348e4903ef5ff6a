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
    learner_error,
    ok,
    probe_images,
    reference_extractor,
    register,
)
from tl_helpers.checks.registry import exercise

__all__ = ["fitted_rows"]


def _in_train_mode(module: nn.Module) -> list[str]:
    """Names of the submodules (``""`` for the module itself) left in train mode."""
    return [name for name, m in module.named_modules() if m.training]


@register("feature_extractor", 2, "a pretrained backbone that returns pooled features, in eval mode")
def _check_feature_extractor(extractor: Any) -> CheckResult:
    if not isinstance(extractor, nn.Module):
        return fail(f"Expected an nn.Module, got {type(extractor).__name__}.", mistake="not_a_module")
    training = _in_train_mode(extractor)  # the object as handed over, whatever a later loop does to it
    model = copy.deepcopy(extractor).cpu().float()
    before = {n: m.running_mean.clone() for n, m in batchnorms(model) if m.running_mean is not None}
    x = probe_images(4)
    with torch.no_grad():
        out = model(x)
        again = model(x)
    if isinstance(out, (tuple, list)):
        out, again = out[0], again[0]
    if out.ndim == 4:
        return fail(
            f"The output is a feature map {tuple(out.shape)}, not a vector per image: pool it "
            "(timm: reset_classifier(0) keeps the global average pooling).",
            mistake="not_pooled",
        )
    if out.ndim != 2:
        return fail(f"Expected features N x D, got shape {tuple(out.shape)}.", mistake="wrong_shape")
    if out.shape[1] == 1000:
        return fail(
            "1000 outputs: these are still ImageNet class scores. Remove the head "
            "(model.reset_classifier(0), or replace model.classifier with nn.Identity()).",
            mistake="imagenet_head_kept",
        )
    moved = any(not torch.equal(m.running_mean, before[n]) for n, m in batchnorms(model) if n in before)
    if moved:
        return fail(
            "The extractor is in train mode: BatchNorm used the batch statistics and updated its "
            "running statistics. Call extractor.eval() when you build it, before extracting features "
            "(checked on the extractor as you built it, whatever a later loop switches).",
            mistake="extractor_train_mode",
        )
    if not torch.allclose(out, again, atol=1e-6):
        return fail(
            "Two calls on the same images gave different features: dropout is still on (the model, or part "
            "of it, is in train mode). Call extractor.eval() on the whole extractor.",
            mistake="extractor_train_mode",
        )
    if training:
        where = "the extractor itself" if "" in training else f"{len(training)} submodule(s), e.g. {training[0]!r}"
        return fail(
            f"The extractor is not in eval mode ({where} in train mode): call extractor.eval() when you build "
            "it, so BatchNorm and dropout behave for inference whoever uses it next.",
            mistake="extractor_train_mode",
        )
    if out.shape[1] == 1280:
        with torch.no_grad():
            ref = reference_extractor()(x)
        if not torch.allclose(out, ref, atol=1e-3, rtol=1e-3):
            return fail(
                "These 1280 features are not those of the pretrained EfficientNet-Lite0: did you load "
                "the ImageNet weights (pretrained=True)? Random-init features are far worse.",
                mistake="not_pretrained",
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
            "Extract the test features from a separate split.",
            mistake="train_test_overlap",
        )
    if acc > 1.0 and abs(acc / 100 - true_test) < 0.01:
        return fail("Report accuracy as a fraction between 0 and 1, not a percentage.", mistake="percentage")
    if abs(acc - true_test) <= 0.005:
        if true_test < 0.5:
            return fail(
                f"Test accuracy {true_test:.1%} is low for pretrained features; check the features.",
                mistake="low_accuracy",
            )
        return ok(f"Linear probe test accuracy {true_test:.1%} (training accuracy {true_train:.1%}).")
    if abs(acc - true_train) <= 0.005:
        return fail(
            f"Accuracy computed on the wrong split: {acc:.1%} is the *training* accuracy; the test "
            f"accuracy is {true_test:.1%}. Score on X_test, y_test.",
            mistake="test_acc_on_train",
        )
    return fail(
        f"Your accuracy {acc:.1%} does not match this classifier on the test features ({true_test:.1%}).",
        mistake="test_acc_mismatch",
    )


def _shared_rows(X: Any, Y: Any, tol: float = 1e-3) -> int:
    """How many rows of ``X`` also appear in ``Y`` up to float noise (features of the same image computed in
    another batch differ in the last digits, so exact comparison would miss them)."""
    a, b = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(Y, dtype=torch.float32)
    shared = 0
    for chunk in a.split(512):
        shared += int((torch.cdist(chunk, b).min(1).values < tol * (1 + chunk.norm(dim=1))).sum())
    return shared


def _numpy(x: Any) -> Any:
    import numpy as np

    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


@register("extract_loop", 3, "a hand-written extraction loop: eval mode, no gradients, every batch, labels aligned")
def _check_extract_loop(extract_features: Any) -> CheckResult:
    if not callable(extract_features):
        return fail(
            "Pass your function extract_features(extractor, loader) itself (no parentheses).", mistake="not_a_function"
        )
    from torch.utils.data import DataLoader

    from tl_helpers.data import ImageTensors, make_loader
    from tl_helpers.device import get_device

    g = torch.Generator().manual_seed(0)
    n = 20
    images = torch.randint(0, 256, (n, 3, 64, 64), generator=g, dtype=torch.uint8)
    labels = torch.randperm(n, generator=g) % 10
    data = ImageTensors(images, labels, [f"probe/{i}.jpg" for i in range(n)])
    ordered = make_loader(data, batch_size=6, image_size=64)  # 4 batches, the last one partial
    # a shuffled loader (a new order on every pass, every image once): features and labels must come from
    # the same pass; each returned row is matched to its image by its features, then its label is compared
    loader = DataLoader(
        ordered.dataset,
        batch_size=6,
        shuffle=True,
        generator=torch.Generator().manual_seed(2026),
        collate_fn=ordered.collate_fn,
    )
    reference = reference_extractor()
    with torch.no_grad():
        expected = torch.cat([reference(x) for x, _ in ordered])  # in the images' order
    extractor = copy.deepcopy(reference).train().to(get_device())  # the loop must switch to eval mode
    grad_enabled: list[bool] = []
    extractor.register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    before = {k: m.running_mean.clone() for k, m in batchnorms(extractor) if m.running_mean is not None}
    try:
        result = extract_features(extractor, loader)
    except NotImplementedError:
        raise
    except Exception as exc:
        return learner_error(exc, "extract_features(extractor, loader)")
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return fail(
            "Return a pair (features, labels): features N x D, labels N, in the loader's order.", mistake="not_a_pair"
        )
    X, y = result
    if (isinstance(X, torch.Tensor) and X.requires_grad) or any(grad_enabled):
        return fail(
            "The extractor ran with gradients enabled, building the autograd graph: run the loop under "
            "torch.no_grad() (extraction "
            "needs no gradients; keeping the graph of every batch wastes memory and time, and .detach() "
            "afterwards does not avoid building it).",
            mistake="no_grad_missing",
        )
    X, y = torch.as_tensor(_numpy(X)).float().cpu(), torch.as_tensor(_numpy(y)).long().cpu().flatten()
    if len(X) != n:
        last = n - (n // 6) * 6
        if len(X) in (6, last):
            return fail(
                f"{len(X)} feature rows for {n} images: only one batch was kept (the variable was overwritten "
                "in the loop). Append each batch's features to a list and torch.cat them after the loop.",
                mistake="one_batch_kept",
            )
        return fail(
            f"{len(X)} feature rows for {n} images: collect the features of every batch, once.",
            mistake="wrong_row_count",
        )
    if X.ndim != 2:
        return fail(f"Expected features N x D, got shape {tuple(X.shape)}.", mistake="wrong_shape")
    moved = any(not torch.equal(m.running_mean.cpu(), before[k].cpu()) for k, m in batchnorms(extractor) if k in before)
    if moved:
        return fail(
            "The extractor ran in train mode: BatchNorm normalised with each batch's statistics and updated "
            "its running statistics, so an image's features depend on its batch. Call extractor.eval() "
            "before the loop.",
            mistake="extractor_train_mode",
        )
    if X.shape[1] != expected.shape[1]:
        return fail(
            f"Expected {expected.shape[1]} features per image (the extractor's output), got {X.shape[1]}.",
            mistake="wrong_shape",
        )
    distance, index = torch.cdist(X, expected).min(dim=1)
    if bool((distance > 1e-3 * (1 + expected.norm(dim=1).mean())).any()):
        return fail(
            "These features differ from the extractor's output for the loader's batches: feed each batch "
            "from the loader to the extractor as it is (the loader already normalises).",
            mistake="features_differ",
        )
    if len(set(index.tolist())) != n:
        return fail(
            f"Some images appear twice and others not at all among your {n} feature rows: collect each "
            "batch's features once, in one pass over the loader.",
            mistake="wrong_row_count",
        )
    if len(y) != n or not torch.equal(y, labels[index]):
        return fail(
            "The labels do not line up with the features: this loader shuffles, so each pass over it gives "
            "another order. Collect each batch's features and labels together, in the same loop (one pass; "
            "not the labels from a second pass or from the dataset).",
            mistake="features_labels_misaligned",
        )
    return ok(f"{n} images -> {tuple(X.shape)} features in eval mode without gradients, labels aligned.")


def fitted_rows(clf: Any, candidates: dict[str, tuple[Any, Any]], probe: Any) -> str:
    """Which candidate training set ``clf`` was fitted on: the refit on it predicts most like ``clf``.

    Args:
        clf: A fitted scikit-learn classifier (or pipeline).
        candidates: name -> (features, labels) of each set it may have been fitted on.
        probe: Features on which the predicted probabilities are compared.

    Returns:
        The name of the closest candidate.
    """
    import numpy as np
    from sklearn.base import clone
    from threadpoolctl import threadpool_limits

    mine = clf.predict_proba(probe)
    distance = {}
    for name, (X, y) in candidates.items():
        with threadpool_limits(limits=1, user_api="blas"):
            refit = clone(clf).fit(X, y)
        distance[name] = float(np.abs(refit.predict_proba(probe) - mine).mean())
    return min(distance, key=distance.__getitem__)


@register("probe_selection", 3, "C chosen on validation accuracy, fitted without test rows, scored once on test")
def _check_probe_selection(
    Cs: Any,
    val_scores: Any,
    best_C: Any,
    clf: Any,
    X_train: Any,
    y_train: Any,
    X_val: Any,
    y_val: Any,
    X_test: Any,
    y_test: Any,
    test_acc: Any,
) -> CheckResult:
    import numpy as np
    from sklearn.base import clone
    from threadpoolctl import threadpool_limits

    Xtr, Xva, Xte = (np.asarray(_numpy(x), dtype=np.float64) for x in (X_train, X_val, X_test))
    ytr, yva, yte = (np.asarray(_numpy(y)).ravel() for y in (y_train, y_val, y_test))
    Cs, val_scores = [float(c) for c in Cs], [float(s) for s in val_scores]
    if len(Cs) < 2 or len(Cs) != len(val_scores):
        return fail(
            "Give at least two candidate values in Cs and one validation score per candidate in val_scores: "
            "the choice of C must come from comparing them.",
            mistake="no_comparison",
        )
    if len(Xva) and len(Xte) and _shared_rows(Xva, Xte):
        return fail(
            "Your validation features are test features (the same images): choosing C on them is choosing it "
            "on the test set, and the final test score is then no longer honest. Keep three separate sets: "
            "validation features from data['val'] (val_small), test features from the test set only.",
            mistake="validation_is_test",
        )
    if len(Xtr) and len(Xte) and _shared_rows(Xtr, Xte):
        return fail(
            f"Data leakage: {_shared_rows(Xtr, Xte)} test feature row(s) also appear in the training features.",
            mistake="train_test_overlap",
        )
    keys = [k for k in clf.get_params() if k == "C" or k.endswith("__C")]
    if not keys:
        return fail(
            "Use a classifier with a regularisation parameter C (LogisticRegression(C=...)).", mistake="no_C_parameter"
        )
    key = keys[-1]
    if not np.isclose(float(clf.get_params()[key]), float(best_C)):
        return fail(
            f"Your final classifier uses C={clf.get_params()[key]}, not your best_C={best_C}: refit it with best_C.",
            mistake="final_C_not_best_C",
        )
    chosen = [i for i, c in enumerate(Cs) if np.isclose(c, float(best_C))]
    if not chosen or val_scores[chosen[0]] < max(val_scores) - 1e-9:
        return fail(
            f"best_C={best_C} is not the candidate with the best validation score "
            f"(that is C={Cs[int(np.argmax(val_scores))]}, {max(val_scores):.1%}). "
            "Pick the C that maximises val_scores.",
            mistake="best_C_not_argmax",
        )
    recomputed = {"validation": [], "test": [], "training": []}
    for c in Cs:
        with threadpool_limits(limits=1, user_api="blas"):
            model = clone(clf).set_params(**{key: c}).fit(Xtr, ytr)
        recomputed["validation"].append(float(model.score(Xva, yva)))
        recomputed["test"].append(float(model.score(Xte, yte)))
        recomputed["training"].append(float(model.score(Xtr, ytr)))
    gap = {name: max(abs(a - b) for a, b in zip(scores, val_scores)) for name, scores in recomputed.items()}
    if gap["validation"] > 0.02:
        if gap["test"] <= 0.02:
            return fail(
                "You chose C by test accuracy: your val_scores are the test accuracies of the candidates. "
                "The test set must decide nothing; score each candidate on X_val, y_val and keep the test "
                "set for the one final measurement.",
                mistake="C_chosen_on_test",
            )
        if gap["training"] <= 0.02:
            return fail(
                "Your val_scores are training accuracies (the data each candidate was fitted on): score each "
                "candidate on the validation features X_val, y_val.",
                mistake="C_chosen_on_train",
            )
        return fail(
            f"Your val_scores {[round(s, 3) for s in val_scores]} do not match candidates fitted on the training "
            f"features and scored on the validation features ({[round(s, 3) for s in recomputed['validation']]}).",
            mistake="val_scores_not_recomputable",
        )
    both = (np.vstack([Xtr, Xva]), np.concatenate([ytr, yva]))
    rows = fitted_rows(
        clf,
        {
            "train": (Xtr, ytr),
            "train + val": both,
            "train + test": (np.vstack([Xtr, Xte]), np.concatenate([ytr, yte])),
            "train + val + test": (np.vstack([both[0], Xte]), np.concatenate([both[1], yte])),
        },
        Xte,
    )
    if "test" in rows:
        return fail(
            f"The final classifier was refitted on {rows}: the test images were used for fitting, so its test "
            "accuracy measures memory, not generalisation. Refit on the training (and, if you like, validation) "
            "features only.",
            mistake="refit_on_test",
        )
    true_test = float(clf.score(Xte, yte))
    true_train = float(clf.score(Xtr, ytr))
    acc = float(test_acc)
    if acc > 1.0 and abs(acc / 100 - true_test) < 0.01:
        return fail("Report accuracy as a fraction between 0 and 1, not a percentage.", mistake="percentage")
    if abs(acc - true_test) > 0.005:
        if abs(acc - true_train) <= 0.005:
            return fail(
                f"test_acc {acc:.1%} is the training accuracy; score the final classifier on X_test, y_test.",
                mistake="test_acc_on_train",
            )
        if any(abs(acc - s) <= 1e-9 for s in val_scores):
            return fail(
                f"test_acc {acc:.1%} is a validation score; score the final classifier once on X_test, y_test.",
                mistake="test_acc_on_val",
            )
        return fail(
            f"test_acc {acc:.1%} does not match the final classifier on the test features ({true_test:.1%}).",
            mistake="test_acc_mismatch",
        )
    return ok(
        f"C={best_C} chosen on validation accuracy ({max(val_scores):.1%}), probe fitted on {rows}, "
        f"test accuracy {true_test:.1%} measured once."
    )


exercise(
    "feature_extractor",
    "A feature extractor is the pretrained network minus its ImageNet classifier: it should return one "
    "pooled vector per image, computed with BatchNorm's stored statistics.",
    "models.load_backbone(name) (pretrained by default); timm models have reset_classifier(...); "
    "module.eval() switches BatchNorm and dropout to inference.",
    "extractor = models.load_backbone(...); remove the head with extractor.reset_classifier(<no classes>) "
    "(or put nn.Identity() where the classifier was); then extractor.eval().",
)
exercise(
    "extract_loop",
    "Run every batch of the loader through the frozen extractor in inference mode, keep the features and "
    "the labels of each batch together, and join them at the end.",
    "extractor.eval(), the torch.no_grad() context (or decorator), `for X, y in loader:`, list.append and "
    "torch.cat(list_of_tensors).",
    "feats, labels = [], []; switch to eval; under no_grad: for X, y in loader: feats.append(extractor(X)); "
    "labels.append(y); return torch.cat(...), torch.cat(...).",
)
exercise(
    "probe_selection",
    "Regularisation is a choice, and choices are made on validation data: the test set is looked at once, "
    "at the end, and never used for fitting.",
    "LogisticRegression(C=..., max_iter=1000) or features.fit_logistic_regression(X, y, C=...); .fit, .score; "
    "X_val, y_val come from data['val']; max() over your scores.",
    "for C in Cs: val_scores.append(<fit on X_train, y_train with C>.score(X_val, y_val)); best_C = the C with "
    "the largest val score; clf = <fit with best_C on the training data>; test_acc = clf.score(X_test, y_test).",
)
