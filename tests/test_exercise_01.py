"""Exercise 01 (pretrained models): learner-style wrong answers are named, other correct answers pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tl_helpers import models
from tl_helpers.checks import run_check

PRE = models.get_preprocessing("efficientnet_lite0")
MEAN = torch.tensor(PRE.mean).view(1, 3, 1, 1)
STD = torch.tensor(PRE.std).view(1, 3, 1, 1)

GRADED_VARIANTS = [
    ("01_pretrained_models_exercises", "    model.eval()", "    pass", "imagenet_topk", "train mode"),
    (
        "01_pretrained_models_exercises",
        "better_layer = max(probe_scores, key=probe_scores.get)",
        'better_layer = "blocks.1"  # early filters look sharper',
        "better_layer",
        "disagree",
    ),
    (
        "01_pretrained_models_exercises",
        "    x = F.interpolate(x, size=(size, size), mode=pre.interpolation, antialias=True, align_corners=False)",
        '    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)',
        "preprocess",
        "bilinear interpolation",
    ),
    (
        "01_pretrained_models_exercises",
        "    return {name: (out.mean(dim=(2, 3)) if out.ndim == 4 else out).numpy() for name, out in outputs.items()}",
        "    return {name: (out.flatten(1) if out.ndim == 4 else out).numpy() for name, out in outputs.items()}",
        "better_layer",
        "flattened, not pooled",
    ),
]


def fails_with(result, phrase: str) -> None:
    assert not result.passed, result.feedback
    assert phrase.lower() in result.feedback.lower(), result.feedback


def preprocess(images, size=224):
    x = F.interpolate(images.float() / 255, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return (x - MEAN) / STD


# ----------------------------------------------------------------------------- preprocess (normalisation check)


def test_preprocess_wrong_answers_are_named():
    def no_255(images, size=224):
        x = F.interpolate(images.float(), size=(size, size), mode="bicubic", align_corners=False)
        return (x - MEAN) / STD

    def imagenet_stats(images, size=224):
        x = F.interpolate(images.float() / 255, size=(size, size), mode="bicubic", align_corners=False)
        return (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
            1, 3, 1, 1
        )

    def only_scaled(images, size=224):
        return F.interpolate(images.float() / 255, size=(size, size), mode="bicubic", align_corners=False)

    fails_with(run_check("normalisation", no_255, "efficientnet_lite0"), "divide the uint8 pixels by 255")
    fails_with(run_check("normalisation", imagenet_stats, "efficientnet_lite0"), "ImageNet statistics")
    fails_with(run_check("normalisation", only_scaled, "efficientnet_lite0"), "did not normalise")


def test_preprocess_other_correct_answer_passes():
    def by_hand(images, size=224):  # resize after normalising, the arithmetic in another order
        x = images.float().div(255).sub(0.5).div(0.5)
        return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=True)

    def torchvision_way(images, size=224):  # torchvision resizes the uint8 images (rounded to integers)
        import torchvision.transforms.functional as TF

        x = TF.resize(images, [size, size], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
        return (x.float() / 255 - MEAN) / STD

    for answer in (by_hand, torchvision_way, preprocess):
        result = run_check("preprocess", answer, "efficientnet_lite0")
        assert result.passed, (answer.__name__, result.feedback)


def test_preprocess_resize_mistakes_have_their_own_name():
    def bilinear(images, size=224):
        x = F.interpolate(images.float() / 255, size=(size, size), mode="bilinear", align_corners=False)
        return (x - MEAN) / STD

    def nearest(images, size=224):
        return (F.interpolate(images.float() / 255, size=(size, size), mode="nearest") - MEAN) / STD

    def no_resize(images, size=224):
        return (images.float() / 255 - MEAN) / STD

    def size_ignored(images, size=224):
        return preprocess(images, 224)

    def only_scaled(images, size=224):
        return F.interpolate(images.float() / 255, size=(size, size), mode="bicubic", align_corners=False)

    for answer, mistake in [
        (bilinear, "wrong_interpolation"),
        (nearest, "wrong_interpolation"),
        (no_resize, "no_resize"),
        (size_ignored, "wrong_size"),
        (only_scaled, "not_normalised"),
    ]:
        result = run_check("preprocess", answer, "efficientnet_lite0")
        assert not result.passed and result.mistake == mistake, (answer.__name__, result.mistake, result.feedback)
    assert "bilinear" in run_check("preprocess", bilinear, "efficientnet_lite0").feedback


# ----------------------------------------------------------------------------- imagenet_topk


def test_topk_solution_and_alternative_pass():
    def solution(model, images, k=5):
        model.eval()
        with torch.no_grad():
            return model(preprocess(images)).softmax(dim=1).topk(k, dim=1)

    def argsort_way(model, images, k=5):  # inference_mode, argsort + gather, a plain tuple
        model = model.eval()
        with torch.inference_mode():
            probs = F.softmax(model(preprocess(images)), dim=-1)
        order = probs.argsort(dim=1, descending=True)[:, :k]
        return probs.gather(1, order).clone(), order.clone()

    assert run_check("imagenet_topk", solution).passed
    assert run_check("imagenet_topk", argsort_way).passed


def test_topk_wrong_answers_are_named():
    def no_eval(model, images, k=5):
        with torch.no_grad():
            return model(preprocess(images)).softmax(dim=1).topk(k)

    def logits(model, images, k=5):
        model.eval()
        with torch.no_grad():
            return model(preprocess(images)).topk(k)

    def batch_softmax(model, images, k=5):
        model.eval()
        with torch.no_grad():
            return torch.softmax(model(preprocess(images)), dim=0).topk(k, dim=1)

    def forgot_normalising(model, images, k=5):
        model.eval()
        with torch.no_grad():
            x = F.interpolate(images.float() / 255, size=(224, 224), mode="bicubic", align_corners=False)
            return model(x).softmax(dim=1).topk(k)

    def with_graph(model, images, k=5):
        model.eval()
        return model(preprocess(images)).softmax(dim=1).topk(k)

    def ascending(model, images, k=5):
        model.eval()
        with torch.no_grad():
            probs = model(preprocess(images)).softmax(dim=1)
        order = probs.argsort(dim=1)[:, :k]
        return probs.gather(1, order), order

    def crashes(model, images, k=5):
        model.eval()
        return model(images)  # uint8 straight into the network

    fails_with(run_check("imagenet_topk", no_eval), "train mode")
    fails_with(run_check("imagenet_topk", logits), "logits")
    fails_with(run_check("imagenet_topk", batch_softmax), "wrong dimension")
    fails_with(run_check("imagenet_topk", forgot_normalising), "not normalised")
    fails_with(run_check("imagenet_topk", with_graph), "autograd")
    fails_with(run_check("imagenet_topk", ascending), "least likely")
    fails_with(run_check("imagenet_topk", crashes), "model(images)")


def test_topk_mistakes_have_their_own_name():
    def run(model, images, how):
        model.eval()
        with torch.no_grad():
            logits = model(preprocess(images))
        if how == "log_softmax":
            return logits.log_softmax(dim=1).topk(3, dim=1)
        if how == "sigmoid":
            return logits.sigmoid().topk(3, dim=1)
        if how == "softmax_after_topk":
            top = logits.topk(3, dim=1)
            return top.values.softmax(dim=1), top.indices
        if how == "unsorted":
            top = logits.softmax(dim=1).topk(3, dim=1)
            return top.values.flip(1), top.indices.flip(1)
        if how == "dim0":
            return logits.softmax(dim=0).topk(3, dim=1)
        return logits.topk(3, dim=1)

    for how, mistake in [
        ("log_softmax", "log_probabilities"),
        ("sigmoid", "sigmoid_not_softmax"),
        ("softmax_after_topk", "softmax_after_topk"),
        ("unsorted", "topk_unsorted"),
        ("dim0", "softmax_wrong_dim"),
        ("logits", "logits_not_probabilities"),
    ]:
        result = run_check("imagenet_topk", lambda model, images, k=5, how=how: run(model, images, how))
        assert not result.passed and result.mistake == mistake, (how, result.mistake, result.feedback)


# ----------------------------------------------------------------------------- better_layer (decision)


def test_better_layer_own_numbers_and_form():
    fails_with(run_check("better_layer", {"blocks.1": 0.74, "global_pool": 0.86}, "blocks.1"), "disagree")
    fails_with(run_check("better_layer", {"blocks.1": 74.0, "global_pool": 86.0}, "global_pool"), "percentages")
    fails_with(run_check("better_layer", {"blocks.1": 0.74, "global_pool": 0.86}, "late"), "one of the layers")


@pytest.mark.real_data
def test_better_layer_recomputed():
    assert run_check("better_layer", {"blocks.1": 0.74, "global_pool": 0.86}, "global_pool").passed
    # another correct answer: three layers, another C, slightly different numbers
    assert run_check("better_layer", {"blocks.0": 0.45, "blocks.3": 0.83, "global_pool": 0.84}, "global_pool").passed
    # probes scored on their own training features: every late layer looks perfect
    fails_with(run_check("better_layer", {"blocks.1": 0.99, "global_pool": 1.0}, "global_pool"), "training")
    # numbers from a broken probe (features not pooled right, or labels misaligned)
    fails_with(run_check("better_layer", {"blocks.1": 0.2, "global_pool": 0.1}, "blocks.1"), "far from")
    # a pipeline bug that crowns the early layer: the recomputed probes disagree
    fails_with(run_check("better_layer", {"blocks.1": 0.8, "global_pool": 0.7}, "blocks.1"), "not the better layer")


def pooled_features_from(pool):
    """A learner's pooled_features(split) for the notebook's layers, with its own way of pooling."""
    from tl_helpers.features import layer_outputs

    model = models.load_backbone("efficientnet_lite0").eval()

    def pooled_features(split):
        with torch.no_grad():
            outputs = layer_outputs(model, preprocess(split.images, size=64), ["blocks.1", "global_pool"])
        return {name: (pool(out) if out.ndim == 4 else out).numpy() for name, out in outputs.items()}

    return pooled_features


def test_better_layer_flattened_maps_are_named():
    flattened = pooled_features_from(lambda out: out.flatten(1))
    result = run_check("better_layer", {"blocks.1": 0.69, "global_pool": 0.87}, "global_pool", flattened)
    assert not result.passed and result.mistake == "flattened_not_pooled", result.feedback
    result = run_check("better_layer", {"blocks.1": 0.74}, "blocks.1")
    assert not result.passed and result.mistake == "no_comparison", result.feedback


@pytest.mark.real_data
def test_better_layer_with_pooled_features_passes():
    for pool in (lambda out: out.mean(dim=(2, 3)), lambda out: F.adaptive_avg_pool2d(out, 1).flatten(1)):
        result = run_check(
            "better_layer", {"blocks.1": 0.75, "global_pool": 0.87}, "global_pool", pooled_features_from(pool)
        )
        assert result.passed, result.feedback
