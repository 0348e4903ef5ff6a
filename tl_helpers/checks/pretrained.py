"""Checks of notebook 01's exercises: ImageNet predictions of a pretrained model, early vs late features."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tl_helpers.checks.core import (
    REFERENCE,
    CheckResult,
    batchnorms,
    fail,
    learner_error,
    ok,
    preprocessing_of,
    register,
)
from tl_helpers.checks.registry import exercise

__all__ = ["EARLY_LATE_GAP", "imagenet_model", "reference_photos", "reference_probe_scores"]

EARLY_LATE_GAP = 0.05
"""How much better (validation accuracy) another layer must be before naming a layer counts as wrong."""


def imagenet_model() -> nn.Module:
    """The pretrained EfficientNet-Lite0 with its 1000-class ImageNet head (loaded once, eval mode)."""
    if "lite0_imagenet" not in REFERENCE:
        from tl_helpers.models import load_backbone

        REFERENCE["lite0_imagenet"] = load_backbone("efficientnet_lite0").eval()
    return REFERENCE["lite0_imagenet"]


def reference_photos(size: int = 224) -> torch.Tensor:
    """Two bundled photos (scikit-image's cat and coffee) as uint8 ``2 x 3 x size x size``."""
    from skimage import data as skdata

    batch = []
    for image in (skdata.chelsea(), skdata.coffee()):
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        batch.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(batch)


def _probs(model: nn.Module, images: torch.Tensor, mean: Any, std: Any, scale: float = 255.0) -> torch.Tensor:
    from tl_helpers.data import BatchTransform

    pre = preprocessing_of(model)
    x = BatchTransform(mean, std, images.shape[-1], pre.interpolation).transform(images)
    if scale != 255.0:  # the same resize, then the learner's wrong scale
        x = (images.float() / scale - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.eval()(x).softmax(dim=1)


def _as_pair(result: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    if hasattr(result, "values") and hasattr(result, "indices") and not callable(result.values):
        return torch.as_tensor(result.values), torch.as_tensor(result.indices)
    if isinstance(result, (tuple, list)) and len(result) == 2:
        return torch.as_tensor(result[0]), torch.as_tensor(result[1])
    return None


INTERPOLATION_AGREEMENT: dict[str, float] = {"bicubic": 1.0, "bilinear": 0.707, "nearest": 0.207, "no resize": 0.063}
"""Share of 300 EuroSAT test images (30 per class, 64 px upsampled to 224) whose ImageNet top-1 class with
EfficientNet-Lite0 equals the one it gets with the bicubic resize its weights were trained with, for each
other way of resizing (measured once on 2 CPU cores; docs/CHECKS.md). A linear probe on the pooled features
cares less: 84 % (bicubic), 86 % (bilinear), 77 % (nearest), 86 % (64 px, no resize) validation accuracy."""


def _smooth_images(n: int = 3, size: int = 24, seed: int = 0) -> torch.Tensor:
    """uint8 images with structure at every scale, so each way of resizing gives another result."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=g)
    x = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    x = 0.7 * x + 0.3 * torch.rand(n, 3, size, size, generator=g)
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


@register("preprocess", 2, "uint8 images resized as the weights expect, scaled to [0, 1] and normalised")
def _check_preprocess(preprocess: Any, model: Any = "efficientnet_lite0") -> CheckResult:
    from tl_helpers.checks.splits import check_normalisation

    if not callable(preprocess):
        return fail(
            "Pass your function preprocess(images, size=224) itself (no parentheses).", mistake="not_a_function"
        )
    scaled = check_normalisation(preprocess, model)  # constant images: scale and mean/std, whatever the size
    if not scaled.passed:
        return scaled
    pre = preprocessing_of(model)
    images, size = _smooth_images(), 40  # upsampling: antialiasing changes nothing, the interpolation does
    try:
        out = preprocess(images.clone(), size)
    except NotImplementedError:
        raise
    except Exception as exc:
        return learner_error(exc, "preprocess(images, size)")
    out = torch.as_tensor(out.detach().cpu() if isinstance(out, torch.Tensor) else out).float()
    agreement = ", ".join(f"{k} {v:.0%}" for k, v in INTERPOLATION_AGREEMENT.items() if k != "bicubic")
    if out.ndim == 4 and tuple(out.shape[-2:]) == tuple(images.shape[-2:]):
        return fail(
            f"The images were not resized: {tuple(images.shape[-2:])} in, {tuple(out.shape[-2:])} out for "
            f"size={size}. The weights were trained on {pre.input_size} px images; feeding another size "
            "changes the predictions (measured on upsampled EuroSAT images, the ImageNet top-1 class agrees "
            f"with the bicubic resize for: {agreement}). Resize with F.interpolate(x, size=(size, size), ...).",
            mistake="no_resize",
        )
    if tuple(out.shape) != (len(images), 3, size, size):
        return fail(
            f"preprocess(images, size={size}) returned shape {tuple(out.shape)}; expected "
            f"{(len(images), 3, size, size)}: resize to the size you are given (size x size).",
            mistake="wrong_size",
        )
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    x = images.float() / 255
    variants = {
        pre.interpolation: F.interpolate(x, size=(size, size), mode=pre.interpolation, align_corners=False),
        f"{pre.interpolation} (align_corners=True)": F.interpolate(
            x, size=(size, size), mode=pre.interpolation, align_corners=True
        ),
    }
    for mode in ("bicubic", "bilinear"):
        variants.setdefault(mode, F.interpolate(x, size=(size, size), mode=mode, align_corners=False))
    variants["nearest"] = F.interpolate(x, size=(size, size), mode="nearest")
    variants["nearest-exact"] = F.interpolate(x, size=(size, size), mode="nearest-exact")
    variants["area"] = F.interpolate(x, size=(size, size), mode="area")
    distance = {name: float((out - (v - mean) / std).abs().mean()) for name, v in variants.items()}
    closest = min(distance, key=distance.__getitem__)
    if closest.startswith(pre.interpolation) and distance[closest] < 0.02:
        return ok(
            f"Resized with {pre.interpolation} interpolation, scaled to [0, 1] and normalised with "
            f"mean={pre.mean}, std={pre.std}."
        )
    if not closest.startswith(pre.interpolation) and distance[closest] < 0.02:
        return fail(
            f"Resized with {closest.split()[0]} interpolation, but these weights were trained with "
            f"{pre.interpolation} (models.get_preprocessing(model).interpolation). It matters: on EuroSAT "
            "images upsampled to 224 px, the ImageNet top-1 class agrees with the bicubic resize for only "
            f"{agreement}. Pass mode=pre.interpolation to F.interpolate.",
            mistake="wrong_interpolation",
        )
    return fail(
        f"The resized images differ from a {pre.interpolation} resize of your input (mean difference "
        f"{distance[closest]:.3g} after normalising): resize the whole batch with F.interpolate(x, size=(size, "
        f"size), mode={pre.interpolation!r}), without cropping or padding.",
        mistake="wrong_resize",
    )


@register("imagenet_topk", 3, "top-k ImageNet probabilities and classes: eval mode, preprocessing, softmax, topk")
def _check_imagenet_topk(top_predictions: Any) -> CheckResult:
    if not callable(top_predictions):
        return fail(
            "Pass your function top_predictions(model, images, k) itself (no parentheses).", mistake="not_a_function"
        )
    from tl_helpers.device import get_device
    from tl_helpers.models import imagenet_class_names

    reference = imagenet_model()
    pre = preprocessing_of(reference)
    images = reference_photos()
    k = 3
    learner_model = copy.deepcopy(reference).train().to(get_device())  # the learner's function must set eval
    before = {n: m.running_mean.clone() for n, m in batchnorms(learner_model) if m.running_mean is not None}
    try:
        result = top_predictions(learner_model, images.clone(), k)
    except NotImplementedError:
        raise
    except Exception as exc:
        return learner_error(exc, "top_predictions(model, images, k)")
    pair = _as_pair(result)
    if pair is None:
        return fail(
            "Return two tensors: the top-k probabilities and their class indices (what .topk(k) gives).",
            mistake="not_a_pair",
        )
    values, indices = pair
    if values.requires_grad:
        return fail(
            "The probabilities still carry the autograd graph: run the forward pass inside torch.no_grad() "
            "(prediction needs no gradients, and it is faster).",
            mistake="no_grad_missing",
        )
    values, indices = values.detach().float().cpu(), indices.detach().long().cpu()
    if tuple(values.shape) != (2, k) or tuple(indices.shape) != (2, k):
        return fail(
            f"For 2 images and k={k}, expected two 2 x {k} tensors, got {tuple(values.shape)} and "
            f"{tuple(indices.shape)}. Use probs.topk(k, dim=1).",
            mistake="wrong_shape",
        )
    bns = batchnorms(learner_model)
    moved = any(not torch.equal(m.running_mean.cpu(), before[n].cpu()) for n, m in bns if n in before)
    if moved:
        return fail(
            "The model ran in train mode: BatchNorm used the statistics of your batch (and updated its "
            "running statistics), so predictions depend on which images are batched together. Call "
            "model.eval() inside your function, before the forward pass.",
            mistake="train_mode",
        )
    with torch.no_grad():
        from tl_helpers.data import BatchTransform

        x = BatchTransform(pre.mean, pre.std, images.shape[-1], pre.interpolation).transform(images)
        batch_softmax = reference.eval()(x).softmax(dim=0).topk(k, dim=1)
    if torch.equal(indices, batch_softmax.indices) and torch.allclose(values, batch_softmax.values, atol=2e-3):
        return fail(
            "softmax over the wrong dimension: dim=0 normalises across the images of the batch. "
            "Each image's 1000 class scores must sum to 1: .softmax(dim=1).",
            mistake="softmax_wrong_dim",
        )
    with torch.no_grad():
        right_logits = reference.eval()(x)
    log_probs = right_logits.log_softmax(dim=1).topk(k, dim=1)
    if torch.equal(indices, log_probs.indices) and torch.allclose(values, log_probs.values, atol=2e-3):
        return fail(
            "These are log-probabilities (log_softmax): return the probabilities themselves, .softmax(dim=1).",
            mistake="log_probabilities",
        )
    sigmoid = right_logits.sigmoid().topk(k, dim=1)
    if torch.equal(indices, sigmoid.indices) and torch.allclose(values, sigmoid.values, atol=2e-3):
        return fail(
            "A sigmoid gives each class its own independent score, not a probability distribution over the 1000 "
            "classes (they do not sum to 1): use .softmax(dim=1).",
            mistake="sigmoid_not_softmax",
        )
    top_logits = right_logits.topk(k, dim=1)
    if torch.equal(indices, top_logits.indices) and torch.allclose(values, top_logits.values.softmax(dim=1), atol=2e-3):
        return fail(
            f"The softmax was taken over the {k} largest logits only, so your {k} probabilities sum to 1 and "
            "overstate each class: apply .softmax(dim=1) to all 1000 logits first, then .topk(k).",
            mistake="softmax_after_topk",
        )
    if float(values.min()) < -1e-6 or float(values.max()) > 1 + 1e-6 or float(values.sum(1).max()) > 1 + 1e-4:
        return fail(
            f"These are not probabilities (values from {float(values.min()):.3g} to {float(values.max()):.3g}): "
            "they look like raw logits. Turn the 1000 logits into probabilities with .softmax(dim=1) before .topk.",
            mistake="logits_not_probabilities",
        )
    expected = _probs(reference, images, pre.mean, pre.std).topk(k, dim=1)
    names = imagenet_class_names()
    if torch.equal(indices, expected.indices) and torch.allclose(values, expected.values, atol=2e-3):
        return ok(
            f"Top-{k} in eval mode with the right preprocessing: the cat is "
            f"{names[int(indices[0, 0])]!r} ({float(values[0, 0]):.2f})."
        )
    same_sets = all(set(indices[i].tolist()) == set(expected.indices[i].tolist()) for i in range(len(indices)))
    if same_sets and torch.allclose(values.sort(dim=1, descending=True).values, expected.values, atol=2e-3):
        return fail(
            f"The right {k} classes, but not in order from the most likely: sort them in descending order of "
            "probability (.topk(k) with its default sorted=True does).",
            mistake="topk_unsorted",
        )
    lowest = _probs(reference, images, pre.mean, pre.std).topk(k, dim=1, largest=False)
    if torch.equal(indices, lowest.indices):
        return fail(
            "These are the k least likely classes: sort in descending order (.topk(k) does).", mistake="ascending_order"
        )
    wrong_inputs = {
        "not_normalised": (
            "the inputs were scaled to [0, 1] but not normalised: subtract the mean and divide by the std "
            "from models.get_preprocessing(model)",
            _probs(reference, images, (0.0,) * 3, (1.0,) * 3),
        ),
        "wrong_mean_std": (
            "the torchvision ImageNet mean/std were used, but these weights expect "
            f"mean={pre.mean}, std={pre.std} (models.get_preprocessing(model))",
            _probs(reference, images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ),
        "not_scaled_by_255": (
            "the pixels were not divided by 255 before normalising",
            _probs(reference, images, pre.mean, pre.std, scale=1.0),
        ),
    }
    for name, (mistake, probs) in wrong_inputs.items():
        top = probs.topk(k, dim=1)
        if torch.equal(indices, top.indices) and torch.allclose(values, top.values, atol=2e-3):
            return fail(f"Wrong preprocessing: {mistake}.", mistake=name)
    return fail(
        f"The top-1 classes should be {[names[int(i)] for i in expected.indices[:, 0]]} with probabilities "
        f"{[round(float(v), 2) for v in expected.values[:, 0]]}; yours are {[names[int(i)] for i in indices[:, 0]]} "
        f"({[round(float(v), 2) for v in values[:, 0]]}). Preprocess the uint8 images as the weights expect, "
        "call model.eval(), then softmax(dim=1) and topk.",
        mistake="wrong_predictions",
    )


def reference_probe_scores(layers: list[str], per_class: int = 20, seed: int = 0) -> dict[str, tuple[float, float]]:
    """(training, validation) accuracy of a linear probe on each layer's pooled output, recomputed here.

    Raises:
        KeyError: a layer that is not a module of EfficientNet-Lite0.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    from tl_helpers.data import BatchTransform, load_eurosat
    from tl_helpers.features import layer_outputs

    key = ("probe", per_class, seed)
    cache: dict[str, tuple[float, float]] = REFERENCE.setdefault(key, {})  # type: ignore[arg-type, assignment]
    todo = [name for name in layers if name not in cache]
    if todo:
        model = imagenet_model()
        pre = preprocessing_of(model)
        transform = BatchTransform(pre.mean, pre.std, 64, pre.interpolation)
        data = load_eurosat(progress=False)
        splits = {s: data[s].per_class(per_class, seed=seed) for s in ("train", "val")}
        feats: dict[str, dict[str, np.ndarray]] = {}
        for s, split in splits.items():
            with torch.no_grad():
                out = layer_outputs(model, transform.transform(split.images), todo)
            feats[s] = {n: (o.mean(dim=(2, 3)) if o.ndim == 4 else o).float().numpy() for n, o in out.items()}
        for name in todo:
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000, random_state=seed))
            with threadpool_limits(limits=1, user_api="blas"):
                clf.fit(feats["train"][name], splits["train"].labels.numpy())
            cache[name] = (
                float(clf.score(feats["train"][name], splits["train"].labels.numpy())),
                float(clf.score(feats["val"][name], splits["val"].labels.numpy())),
            )
    return {name: cache[name] for name in layers}


def _check_pooled_features(pooled_features: Any, layers: list[str]) -> CheckResult | None:
    """What is wrong with the learner's ``pooled_features(split)`` (None: one C-vector per image per layer)."""
    from tl_helpers.data import ImageTensors
    from tl_helpers.features import layer_outputs

    if not callable(pooled_features):
        return fail(
            "Pass your function pooled_features(split) itself (no parentheses) as the third argument.",
            mistake="not_a_function",
        )
    g = torch.Generator().manual_seed(0)
    n = 4
    split = ImageTensors(
        torch.randint(0, 256, (n, 3, 64, 64), generator=g, dtype=torch.uint8),
        torch.arange(n),
        [f"probe/{i}.jpg" for i in range(n)],
    )
    try:
        got = pooled_features(split)
    except NotImplementedError:
        raise
    except Exception as exc:
        return learner_error(exc, "pooled_features(split)")
    if not isinstance(got, dict):
        return fail(
            f"pooled_features(split) should return a dict {{layer name: N x C features}}, got {type(got).__name__}.",
            mistake="wrong_type",
        )
    model = imagenet_model()
    try:
        with torch.no_grad():
            maps = layer_outputs(model, torch.zeros(1, 3, 64, 64), layers)
    except (KeyError, ValueError):
        return None  # a name that is not a layer: named with the probes below
    for name in layers:
        if name not in got:
            return fail(
                f"pooled_features(split) has no entry for {name!r}, a layer in probe_scores.", mistake="wrong_type"
            )
        features = np.asarray(got[name].detach().cpu() if isinstance(got[name], torch.Tensor) else got[name])
        channels = int(maps[name].shape[1])
        if features.ndim != 2 or features.shape[0] != n:
            return fail(
                f"pooled_features(split)[{name!r}] has shape {features.shape} for {n} images: expected one row "
                f"per image, N x {channels}.",
                mistake="wrong_shape",
            )
        if features.shape[1] != channels and features.shape[1] % channels == 0:
            return fail(
                f"{name!r} gives {features.shape[1]} numbers per image: the feature map was flattened, not pooled "
                f"({channels} channels x every position). A flattened map ties each feature to a position in the "
                "image, so the probe learns where things are rather than what they are, with many more weights "
                "than images. Average over height and width: out.mean(dim=(2, 3)), one number per channel.",
                mistake="flattened_not_pooled",
            )
        if features.shape[1] != channels:
            return fail(
                f"{name!r} gives {features.shape[1]} numbers per image, but the layer has {channels} channels: "
                "average the map N x C x H x W over height and width (dim=(2, 3)).",
                mistake="wrong_shape",
            )
    return None


@register("better_layer", 3, "decision: which layer's features separate EuroSAT better, from your own probe")
def _check_better_layer(probe_scores: Any, better_layer: Any, pooled_features: Any = None) -> CheckResult:
    if not isinstance(probe_scores, dict) or len(probe_scores) < 2:
        return fail(
            "probe_scores must be a dict {layer name: validation accuracy} with at least two layers: the decision "
            "comes from comparing them.",
            mistake="no_comparison",
        )
    try:
        scores = {str(k): float(v) for k, v in probe_scores.items()}
    except (TypeError, ValueError):
        return fail("probe_scores must map each layer name to one accuracy (a number).", mistake="wrong_type")
    if any(v > 1.0 for v in scores.values()):
        return fail("Give the accuracies as fractions between 0 and 1, not percentages.", mistake="percentage")
    if better_layer not in scores:
        return fail(
            f"better_layer must be one of the layers you probed: {sorted(scores)}; got {better_layer!r}.",
            mistake="choice_not_compared",
        )
    own_best = max(scores, key=scores.__getitem__)
    if scores[own_best] > scores[better_layer] + 1e-9:
        return fail(
            f"Your own numbers disagree with your choice: you named {better_layer!r} "
            f"({scores[better_layer]:.1%}) but {own_best!r} scored higher ({scores[own_best]:.1%}). Name the layer "
            "whose probe has the higher validation accuracy.",
            mistake="choice_contradicts_scores",
        )
    if pooled_features is not None:  # before the probes: this part needs no data
        problem = _check_pooled_features(pooled_features, list(scores))
        if problem is not None:
            return problem
    try:
        reference = reference_probe_scores(list(scores))
    except KeyError:
        return fail(
            f"Some of {sorted(scores)} are not layers of the model: use names from model.named_modules().",
            mistake="unknown_layer",
        )
    for name, value in scores.items():
        train_acc, val_acc = reference[name]
        if value > val_acc + 0.12 and (value >= 0.97 or abs(value - train_acc) < abs(value - val_acc)):
            return fail(
                f"Your score for {name!r} ({value:.1%}) looks like *training* accuracy (a probe on these features "
                f"scores about {train_acc:.0%} on its training images but {val_acc:.0%} on validation images). "
                "Score each probe on the validation features.",
                mistake="scored_on_training",
            )
        if abs(value - val_acc) > 0.25:
            return fail(
                f"Your score for {name!r} ({value:.1%}) is far from what a linear probe on the pooled {name} "
                f"features gets on validation images (about {val_acc:.0%}). Pool each feature map over "
                "height and width, fit on training features, score on validation features.",
                mistake="scores_not_recomputable",
            )
    truly_best = max(reference, key=lambda n: reference[n][1])
    if reference[truly_best][1] > reference[better_layer][1] + EARLY_LATE_GAP:
        return fail(
            f"{better_layer!r} is not the better layer: recomputed, {truly_best!r} separates the classes better "
            f"({reference[truly_best][1]:.0%} vs {reference[better_layer][1]:.0%} validation accuracy).",
            mistake="wrong_layer",
        )
    return ok(
        f"{better_layer!r} separates EuroSAT best among the layers you probed "
        f"({', '.join(f'{n}: {v:.0%}' for n, v in scores.items())}); the check's own probe agrees."
    )


exercise(
    "preprocess",
    "The network expects exactly what it saw in training: a fixed size, values in [0, 1], then each "
    "channel shifted by its mean and divided by its std.",
    "models.get_preprocessing(model) gives .mean, .std and .interpolation; torch.nn.functional.interpolate "
    "resizes a float batch; view(1, 3, 1, 1) lets a per-channel tensor broadcast over N x 3 x H x W.",
    "x = images.float() / 255, then F.interpolate(x, size=(size, size), mode=..., antialias=True), then "
    "(x - mean) / std with mean and std shaped 1 x 3 x 1 x 1.",
)
exercise(
    "imagenet_topk",
    "Prediction is inference: BatchNorm must use its stored statistics and no gradients are needed; the "
    "1000 outputs are logits, which only become probabilities after a softmax over the classes.",
    "model.eval(), the torch.no_grad() context, Tensor.softmax(dim=...) and Tensor.topk(k, dim=...), "
    "which returns .values and .indices; your preprocess() from the exercise above.",
    "Inside the function: put the model in eval mode; under no_grad, run it on preprocess(images); "
    "probs = logits.softmax(dim=<the class dimension>); return probs.topk(k, dim=<the same>).",
)
exercise(
    "better_layer",
    "Measure, don't guess: pool each layer's feature map into one vector per image, fit a linear "
    "classifier on training images, and compare the layers by accuracy on validation images.",
    "features.layer_outputs(model, X, [layer names]) returns each layer's output; .mean(dim=(2, 3)) pools "
    "a map N x C x H x W into N x C; sklearn's LogisticRegression(...).fit(...).score(...).",
    "def pooled_features(split): outputs = layer_outputs(model, preprocess(split.images, size=64), layers); "
    "return {name: <each map averaged over height and width> for name, out in outputs.items()}. For each layer: "
    "probe_scores[layer] = LogisticRegression(max_iter=1000).fit(<train features>, y_tr).score(<val features>, "
    "y_va); then better_layer = the key of probe_scores with the largest value.",
)
