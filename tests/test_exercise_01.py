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
    def by_hand(images, size=224):  # bilinear, and the arithmetic in another order
        x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
        return x.div(255).sub(0.5).div(0.5)

    assert run_check("normalisation", by_hand, "efficientnet_lite0").passed
    assert run_check("normalisation", preprocess, "efficientnet_lite0").passed


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
