"""Checks on data: train/test splits and the pretrained model's input normalisation."""

from __future__ import annotations

from typing import Any

import torch

from tl_helpers.checks.core import (
    REFERENCE,
    CheckResult,
    fail,
    files_of,
    ok,
    preprocessing_of,
    register,
)
from tl_helpers.checks.registry import exercise

__all__ = ["check_normalisation", "check_split_leakage", "reference_split_files"]


@register("normalisation", 2, "inputs scaled to [0, 1] and normalised with the pretrained model's mean/std")
def check_normalisation(transform: Any, model: Any = "efficientnet_lite0") -> CheckResult:
    pre = preprocessing_of(model)
    fn = transform
    if isinstance(transform, torch.utils.data.DataLoader):
        fn = getattr(transform.collate_fn, "transform", None)
        if fn is None:
            return fail(
                "This loader has no normalising transform; build it with data.make_loader(..., mean=, std=).",
                mistake="no_normalisation",
            )
    if not callable(fn):
        return fail(
            "Pass your normalising function (uint8 images -> float tensor) or your DataLoader.",
            mistake="not_a_function",
        )
    # constant images survive any resizing, so this works at any output size
    values = torch.tensor([0, 128, 255], dtype=torch.uint8)
    images = values.view(3, 1, 1, 1).expand(3, 3, 64, 64).contiguous()
    out = fn(images.clone())
    out = torch.as_tensor(out).float()
    if out.ndim != 4 or out.shape[0] != 3 or out.shape[1] != 3:
        return fail(f"Expected a batch N x 3 x H x W back, got shape {tuple(out.shape)}.", mistake="wrong_shape")
    got = out.mean(dim=(2, 3))  # 3 images x 3 channels
    mean = torch.tensor(pre.mean).view(1, 3)
    std = torch.tensor(pre.std).view(1, 3)
    expected = (values.float().view(3, 1) / 255 - mean) / std
    if torch.allclose(got, expected, atol=2e-3):
        return ok(f"Inputs are scaled to [0, 1] and normalised with mean={pre.mean}, std={pre.std}.")
    if float(got.abs().max()) > 20:
        return fail(
            "Values are far too large: divide the uint8 pixels by 255 before normalising.", mistake="not_scaled_by_255"
        )
    if torch.allclose(got, values.float().view(3, 1).expand(3, 3) / 255, atol=2e-3):
        return fail(
            f"You scaled to [0, 1] but did not normalise: subtract mean={pre.mean} and divide by "
            f"std={pre.std} (models.get_preprocessing(model)).",
            mistake="not_normalised",
        )
    imagenet_mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3)
    imagenet_std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3)
    wrong = (values.float().view(3, 1) / 255 - imagenet_mean) / imagenet_std
    if torch.allclose(got, wrong, atol=2e-3):
        return fail(
            f"Wrong normalisation for this pretrained model: those are the torchvision ImageNet "
            f"statistics, but these weights expect mean={pre.mean}, std={pre.std}. Always ask "
            "models.get_preprocessing(model) instead of copying numbers.",
            mistake="wrong_mean_std",
        )
    swapped = (values.float().view(3, 1) / 255 - std) / mean
    if torch.allclose(got, swapped, atol=2e-3) and not torch.allclose(mean, std):
        return fail("Mean and std are swapped: x = (x - mean) / std.", mistake="mean_std_swapped")
    return fail(
        f"A black/grey/white image should become {expected[:, 0].tolist()} (channel 0) but became "
        f"{[round(v, 3) for v in got[:, 0].tolist()]}. Use x = (pixels / 255 - mean) / std with "
        f"mean={pre.mean}, std={pre.std}.",
        mistake="wrong_normalisation",
    )


def _name(path: str) -> str:
    """A file's class folder and name (``AnnualCrop/AnnualCrop_1.jpg``), whatever the folder above."""
    return "/".join(str(path).replace("\\", "/").split("/")[-2:])


def reference_split_files() -> dict[str, set[str]] | None:
    """The file names of the course's train/val/test split (``load_eurosat``'s), or None without the data."""
    if "split_files" not in REFERENCE:
        from tl_helpers.data import find_eurosat, make_split, scan_folder

        try:
            split = make_split(scan_folder(find_eurosat(allow_download=False)).samples)
        except Exception:  # no data here: the check then only compares the two sets it is given
            return None
        REFERENCE["split_files"] = {name: {_name(path) for path, _ in split[name]} for name in ("train", "val", "test")}  # type: ignore[assignment]
    return REFERENCE["split_files"]  # type: ignore[return-value]


@register("split_leakage", 2, "train and test sets are disjoint and both cover the classes")
def check_split_leakage(train_data: Any, test_data: Any) -> CheckResult:
    train, test = files_of(train_data), files_of(test_data)
    if not train or not test:
        return fail("One of the sets is empty.", mistake="empty_set")
    shared = sorted(set(train) & set(test))
    if shared:
        return fail(
            f"Data leakage: {len(shared)} test image(s) are also in the training set (e.g. {shared[0]}). "
            "Test images must never be seen in training: take the test set from data['test'], the "
            "training set from data['train'].",
            mistake="train_test_overlap",
        )
    train_images, test_images = getattr(train_data, "images", None), getattr(test_data, "images", None)
    if isinstance(train_images, torch.Tensor) and isinstance(test_images, torch.Tensor):
        seen = {bytes(x.contiguous().cpu().numpy().tobytes()) for x in train_images}
        same = sum(bytes(x.contiguous().cpu().numpy().tobytes()) in seen for x in test_images)
        if same:
            return fail(
                f"Data leakage: {same} test image(s) have exactly the same pixels as a training image (under "
                "other file names): the sets overlap by content. Take the test set from data['test'] and the "
                "training set from data['train'], without copying or renaming images.",
                mistake="train_test_overlap",
            )
    splits = reference_split_files()
    if splits is not None:
        test_names, train_names = {_name(f) for f in test}, {_name(f) for f in train}
        if test_names <= splits["val"]:
            return fail(
                "The test set was taken from the validation split (data['val']): the validation images "
                "choose settings later (C, learning rate...), so they cannot also give the final, honest "
                "score. Take the test set from data['test'].",
                mistake="test_from_val_split",
            )
        if train_names & splits["test"]:
            n = len(train_names & splits["test"])
            return fail(
                f"Data leakage: {n} training image(s) come from the test split data['test']: take the "
                "training set from data['train'].",
                mistake="train_from_test_split",
            )
    for name, data in (("training", train_data), ("test", test_data)):
        labels = getattr(data, "labels", None)
        if labels is not None and len(torch.as_tensor(labels).unique()) < 2:
            return fail(
                f"The {name} set has a single class; use a class-balanced subset such as .per_class(n).",
                mistake="single_class",
            )
    return ok(f"{len(train)} training and {len(test)} test images, no overlap.")


exercise(
    "normalisation",
    "The pretrained weights expect pixels scaled to [0, 1], then each colour channel shifted by a mean "
    "and divided by a std: the numbers the weights were trained with, not numbers from another tutorial.",
    "models.get_preprocessing(model) has .mean and .std (one number per channel); view(1, 3, 1, 1) makes a "
    "per-channel tensor broadcast over a batch N x 3 x H x W.",
    "mean = torch.tensor(pre.mean).view(1, 3, 1, 1); std likewise; return (images.float() / <max pixel "
    "value> - mean) / std.",
)
exercise(
    "split_leakage",
    "A test image must never be seen during training: take the training and test images from different "
    "splits, and the same number of images from every class.",
    "data['train'], data['val'] and data['test'] are separate splits; ImageTensors.per_class(n, seed=...) "
    "gives a class-balanced subset.",
    "train_small = data[<the training split>].per_class(20, seed=seed); test_small = data[<the test "
    "split>].per_class(20, seed=seed).",
)
