"""What ``adapt`` measured: the records the strategies, the report and the command share.

Plain dataclasses (no torch modules inside), so :func:`AdaptResult.to_dict` gives the
``results.json`` that sits beside the report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["AdaptResult", "Comparison", "ConfusedPair", "CurvePoint", "StrategyResult"]


@dataclass
class StrategyResult:
    """One strategy, trained on the training part and scored on validation.

    Attributes:
        name: ``"probe"``, ``"two-phase"`` or ``"full"``.
        val_accuracy: Accuracy on the validation part (0..1).
        val_correct: One bool per validation image (same order for every strategy), for paired intervals.
        settings: What was chosen or used (``C``; epochs, learning rates, steps).
        planned_seconds: The plan's estimate before training.
        seconds: Time it really took (feature extraction or training, plus its validation).
        image_passes: Forward passes over training images it spent (backward passes count too).
    """

    name: str
    val_accuracy: float
    val_correct: list[bool]
    settings: dict[str, Any] = field(default_factory=dict)
    planned_seconds: float = 0.0
    seconds: float = 0.0
    image_passes: int = 0


@dataclass
class Comparison:
    """A strategy against the probe on the same validation images: difference and paired 95 % interval (points)."""

    name: str
    baseline: str
    difference: float
    low: float
    high: float


@dataclass
class CurvePoint:
    """The probe trained on a fraction of the training part, scored on validation."""

    fraction: float
    n_train: int
    val_accuracy: float


@dataclass
class ConfusedPair:
    """A (true, predicted) class pair from the test confusion matrix, with test image indices as examples."""

    true: str
    predicted: str
    count: int
    examples: list[int] = field(default_factory=list)


@dataclass
class AdaptResult:
    """Everything ``adapt`` measured and decided; the report renders this.

    Attributes:
        root: The folder that was read.
        classes: Class names, indexed by label.
        inspection: The inspection's summary (:meth:`tl_helpers.adapt.inspection.Inspection.summary`).
        split_sizes: ``{"train": {class: n}, "val": {...}, "test": {...}}``.
        strategies: Every strategy that ran, the probe first.
        comparisons: Each other strategy against the probe.
        chosen: The strategy kept.
        decision: One or two sentences: what was kept and why, with the numbers.
        test_accuracy: The kept model on the test part (touched once).
        test_interval: 95 % interval of the test accuracy (Wilson), as ``(low, high)`` in 0..1.
        per_class: ``{class: {"precision": p, "recall": r, "support": n}}`` on the test part.
        confusion: Test confusion matrix, rows = true class, columns = predicted.
        confused_pairs: The most frequent off-diagonal cells, largest first.
        test_files: Relative paths of the test images, in the order of the confusion examples' indices.
        curve: The probe at 25 / 50 / 100 % of the training part.
        curve_text: What the curve says.
        planned_seconds: The whole plan's estimate, said before training.
        spent_seconds: Wall time of the whole run.
        timings: Named phases (``inspect``, ``features``, ``probe``, ...), seconds.
        device: Where it ran, in words.
        seed: The seed.
        image_size: Side length the images were decoded to.
        backbone: The pretrained network.
        budget_minutes: The budget it was asked to respect.
        versions: Package versions.
    """

    root: str
    classes: list[str]
    inspection: dict[str, Any]
    split_sizes: dict[str, dict[str, int]]
    strategies: list[StrategyResult]
    comparisons: list[Comparison]
    chosen: str
    decision: str
    test_accuracy: float
    test_interval: tuple[float, float]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    confused_pairs: list[ConfusedPair]
    test_files: list[str]
    curve: list[CurvePoint]
    curve_text: str
    planned_seconds: float
    spent_seconds: float
    timings: dict[str, float]
    device: str
    seed: int
    image_size: int
    backbone: str
    budget_minutes: float
    versions: dict[str, str] = field(default_factory=dict)

    def strategy(self, name: str) -> StrategyResult:
        """The strategy called ``name``."""
        for s in self.strategies:
            if s.name == name:
                return s
        raise KeyError(f"no strategy {name!r}; ran: {[s.name for s in self.strategies]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``results.json``)."""
        return asdict(self)
