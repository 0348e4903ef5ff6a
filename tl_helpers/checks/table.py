"""Which exercise grades which notebook variables: one block per exercise notebook, in the notebook's order.

The batch grader (:mod:`tl_helpers.grading`) re-runs exactly these exercises' checks, on the variables named
here, in the submission's kernel, one gradebook column per exercise (named by its id). A new exercise is one
``exercise(...)`` in a topic module (its check function and hints) and one row here. An exercise graded in
two notebooks (the same task, e.g. ``split_leakage`` in 02 and 06) keeps its id in both.
"""

from __future__ import annotations

from tl_helpers.checks.core import CHECKS
from tl_helpers.checks.registry import graded_in

__all__ = ["ASSIGNMENTS", "BUDGETS", "GRADED", "NET_FACTOR", "NET_FLOOR", "total_points"]

# notebook stem -> [(exercise id, notebook variables passed to its check)], in the order the notebook asks them
GRADED: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "01_pretrained_models_exercises": [
        ("preprocess", ("preprocess", "model")),
        ("imagenet_topk", ("top_predictions",)),
        ("better_layer", ("probe_scores", "better_layer", "pooled_features")),
    ],
    "02_feature_extraction_exercises": [
        ("normalisation", ("normalise", "model")),
        ("feature_extractor", ("extractor_as_built",)),
        ("split_leakage", ("train_small", "test_small")),
        ("extract_loop", ("extract_features",)),
        (
            "probe_selection",
            (
                "Cs",
                "val_scores",
                "best_C",
                "clf",
                "X_train",
                "y_train",
                "X_val",
                "y_val",
                "X_test",
                "y_test",
                "test_acc",
            ),
        ),
    ],
    "03_freezing_exercises": [
        ("freeze_backbone", ("model",)),
        ("bn_frozen", ("model",)),
        ("trainable_count", ("n_trainable", "model")),
        ("optimizer_params", ("optimizer", "model")),
    ],
    "04_replacing_the_head_exercises": [
        ("replace_head", ("model",)),
        ("replace_head_resnet", ("resnet",)),
        ("evaluate_mode", ("evaluate_accuracy",)),
    ],
    "05_fine_tuning_low_lr_exercises": [
        ("train_step", ("train_step", "device")),
        ("lr_range_test", ("lr_range_test", "device")),
        ("range_test_lr", ("chosen_lr", "range_lrs", "range_losses")),
        ("two_phase", ("two_phase", "device")),
        ("fine_tune_lr", ("optimizer", "model")),
        ("discriminative_lr", ("optimizer_groups", "model")),
        ("fine_tuned_accuracy", ("test_acc", "model", "train_small", "test_small")),
    ],
    "06_capstone_quick_check_exercises": [
        ("balanced_split", ("balanced_subset",)),
        ("split_leakage", ("train_small", "test_small")),
        ("optimizer_params", ("optimizer", "model")),
        ("recipe_outcome", ("model", "recipe", "history", "train_small", "test_small", "optimizer")),
        ("honest_accuracy", ("test_acc", "model", "train_small", "test_small")),
        ("confused_pair", ("confused_pair", "model", "test_small", "recipe")),
    ],
    "07_when_transfer_helps_exercises": [
        ("digits_strategy", ("predict_digits", "scores")),
        ("few_shot_ncm", ("nearest_class_mean",)),
    ],
    "08_transfer_in_language_exercises": [
        ("text_mean_pool", ("mean_pool",)),
        ("text_embed", ("embed_sentences",)),
        ("text_frozen_encoder", ("encoder",)),
        ("text_probe", ("clf", "X_fit", "y_fit", "X_test", "y_test", "test_acc")),
        ("text_fine_tune_lr", ("optimizer", "model")),
    ],
    "09_your_own_images_exercises": [
        ("label_conflicts", ("find_label_conflicts",)),
        ("conflict_action", ("conflict_action",)),
        ("choose_strategy", ("choose_strategy",)),
    ],
    "10_choosing_the_source_exercises": [
        ("two_heads", ("TwoHeads",)),
        ("multitask_loss", ("multitask_loss",)),
        ("choose_source", ("choose_source",)),
    ],
    "11_language_fine_tuning_on_equal_terms_exercises": [
        ("search_hits", ("search_hits",)),
        ("paired_difference", ("paired_difference",)),
        ("choose_rate", ("choose_rate",)),
    ],
}

# notebook stem -> [(gradebook column = exercise id, check function id, notebook variables)]: what the grader
# runs, derived from GRADED and the exercises (each row is recorded on its exercise, see Exercise.notebooks)
ASSIGNMENTS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    stem: [(id, graded_in(stem, id, variables).check, variables) for id, variables in rows]
    for stem, rows in GRADED.items()
}

# notebook stem -> seconds the solution notebook takes on the reference machine (kernel start included,
# 2 CPU cores, unloaded). The budget a learner must respect is stated in WORK in the notebook (06: image passes,
# enforced by the recipe check); the grader's wall-clock limit is only a safety net derived from these
# numbers, scaled by how fast the grading machine runs a reference workload (tl_helpers.grading.budget_of):
# net = max(NET_FLOOR, NET_FACTOR x REFERENCE_SECONDS[stem] x slowdown).
# Measured through the grader (benchmarks/grading.py, one submission, --jobs 1) on the machine of
# tl_helpers.grading.REFERENCE_WORKLOAD_SECONDS: 06 31.1 s, 07 10.6 s (2026-12-06).
BUDGETS: dict[str, int] = {
    "06_capstone_quick_check_exercises": 31,
    "07_when_transfer_helps_exercises": 11,
}
NET_FACTOR = 4
"""How many times the reference time a notebook may take before the safety net stops it."""
NET_FLOOR = 240
"""The safety net never stops a notebook before this many seconds."""


def total_points(assignment: str) -> int:
    """The points an assignment is worth (the sum over its graded checks)."""
    return sum(CHECKS[cid].points for _, cid, _ in ASSIGNMENTS[assignment])
