"""Which check grades which notebook variables: one row per graded check, one block per exercise notebook.

The batch grader (:mod:`tl_helpers.grading`) re-runs exactly these checks, on the variables named
here, in the submission's kernel. A new exercise is one topic module and one block of rows here.
"""

from __future__ import annotations

from tl_helpers.checks.core import CHECKS

__all__ = ["ASSIGNMENTS", "BUDGETS", "total_points"]

# notebook stem -> [(gradebook column, check id, notebook variables passed to the check)]
ASSIGNMENTS: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {
    "01_pretrained_models_exercises": [
        ("preprocess", "normalisation", ("preprocess", "model")),
        ("imagenet_topk", "imagenet_topk", ("top_predictions",)),
        ("better_layer", "better_layer", ("probe_scores", "better_layer")),
    ],
    "02_feature_extraction_exercises": [
        ("normalisation", "normalisation", ("normalise", "model")),
        ("feature_extractor", "feature_extractor", ("extractor",)),
        ("split_leakage", "split_leakage", ("train_small", "test_small")),
        ("extract_loop", "extract_loop", ("extract_features",)),
        (
            "probe_selection",
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
        ("freeze_backbone", "freeze_backbone", ("model",)),
        ("bn_frozen", "bn_frozen", ("model",)),
        ("trainable_count", "trainable_count", ("n_trainable", "model")),
        ("optimizer_params", "optimizer_params", ("optimizer", "model")),
    ],
    "04_replacing_the_head_exercises": [
        ("replace_head", "replace_head", ("model",)),
        ("replace_head_resnet", "replace_head", ("resnet",)),
        ("evaluate_mode", "evaluate_mode", ("evaluate_accuracy",)),
    ],
    "05_fine_tuning_low_lr_exercises": [
        ("train_step", "train_step", ("train_step", "device")),
        ("lr_range_test", "lr_range_test", ("lr_range_test", "device")),
        ("range_test_lr", "range_test_lr", ("chosen_lr", "range_lrs", "range_losses")),
        ("two_phase", "two_phase", ("two_phase", "device")),
        ("fine_tune_lr", "fine_tune_lr", ("optimizer", "model")),
        ("discriminative_lr", "discriminative_lr", ("optimizer_groups", "model")),
        ("accuracy", "accuracy", ("test_acc", "model", "train_small", "test_small")),
    ],
    "08_transfer_in_language_exercises": [
        ("mean_pool", "text_mean_pool", ("mean_pool",)),
        ("embed", "text_embed", ("embed_sentences",)),
        ("frozen_encoder", "text_frozen_encoder", ("encoder",)),
        ("probe", "text_probe", ("clf", "X_fit", "y_fit", "X_test", "y_test", "test_acc")),
        ("fine_tune_lr", "text_fine_tune_lr", ("optimizer", "model")),
    ],
    "06_capstone_quick_check_exercises": [
        ("balanced_split", "balanced_split", ("balanced_subset",)),
        ("split_leakage", "split_leakage", ("train_small", "test_small")),
        ("optimizer_params", "optimizer_params", ("optimizer", "model")),
        ("recipe_outcome", "recipe_outcome", ("model", "recipe", "history", "train_small")),
        ("accuracy", "accuracy", ("test_acc", "model", "train_small", "test_small")),
        ("confused_pair", "confused_pair", ("confused_pair", "model", "test_small", "recipe")),
    ],
    "07_when_transfer_helps_exercises": [
        ("digits_strategy", "digits_strategy", ("predict_digits",)),
        ("few_shot_ncm", "few_shot_ncm", ("nearest_class_mean",)),
    ],
}

# notebook stem -> the CPU budget in seconds for the whole notebook (kernel start included); the batch
# grader uses it instead of its --total-timeout and says "over the time budget" when a run exceeds it.
# Outcome exercises state their budget in the notebook's text; keep the two equal.
BUDGETS: dict[str, int] = {
    "06_capstone_quick_check_exercises": 240,  # "stops the whole notebook after 4 minutes"
    "07_when_transfer_helps_exercises": 150,  # "after 2½ minutes"
}


def total_points(assignment: str) -> int:
    """The points an assignment is worth (the sum over its graded checks)."""
    return sum(CHECKS[cid].points for _, cid, _ in ASSIGNMENTS[assignment])
