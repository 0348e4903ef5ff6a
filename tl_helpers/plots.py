"""Figures for the course: training curves, confusion matrices, image grids, filters, feature maps.

Every function returns the matplotlib ``Figure`` so notebooks (and tests) can inspect it.
Importing this module does not import ``matplotlib.pyplot`` (so it never picks a
backend); the first figure does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "RunHistory",
    "confusion_matrix",
    "plot_confusion_matrix",
    "plot_embedding_2d",
    "plot_feature_maps",
    "plot_filters",
    "plot_history",
    "show_images",
]


class RunHistory(Protocol):
    """What :func:`plot_history` reads from a run (``tl_helpers.train.History`` has it)."""

    train_loss: list[float]
    train_acc: list[float]
    val_loss: list[float]
    val_acc: list[float]

    @property
    def epochs(self) -> int: ...


def _pyplot() -> Any:
    import matplotlib.pyplot as plt

    return plt


def plot_history(histories: RunHistory | Mapping[str, RunHistory], title: str = "Training curves") -> Figure:
    """Loss and accuracy per epoch for one run or several named runs."""
    plt = _pyplot()
    runs = dict(histories) if isinstance(histories, Mapping) else {"run": histories}
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, h in runs.items():
        epochs = np.arange(1, h.epochs + 1)
        (line,) = ax_loss.plot(epochs, h.train_loss, "--", label=f"{label} train")
        if h.val_loss:
            ax_loss.plot(epochs, h.val_loss, "-", color=line.get_color(), label=f"{label} val")
        ax_acc.plot(epochs, h.train_acc, "--", color=line.get_color(), label=f"{label} train")
        if h.val_acc:
            ax_acc.plot(epochs, h.val_acc, "-", color=line.get_color(), label=f"{label} val")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix(
    y_true: Sequence[int] | torch.Tensor, y_pred: Sequence[int] | torch.Tensor, num_classes: int
) -> np.ndarray:
    """Counts ``cm[true, pred]`` (scikit-learn's convention)."""
    from sklearn.metrics import confusion_matrix as sk_cm

    return sk_cm(np.asarray(y_true), np.asarray(y_pred), labels=list(range(num_classes)))


def plot_confusion_matrix(
    cm: np.ndarray, class_names: Sequence[str], title: str = "Confusion matrix", normalize: bool = True
) -> Figure:
    """A labelled confusion matrix (rows: true class, columns: predicted class)."""
    plt = _pyplot()
    values = cm / cm.sum(1, keepdims=True).clip(min=1) if normalize else cm
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.2f}" if normalize else str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if values[i, j] > 0.5 * values.max() else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class" if normalize else "count")
    fig.tight_layout()
    return fig


def _as_hwc(image: torch.Tensor) -> np.ndarray:
    x = image.detach().cpu()
    if x.dtype != torch.uint8:
        x = (x - x.min()) / (x.max() - x.min() + 1e-8)
    return x.permute(1, 2, 0).numpy()


def show_images(
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    class_names: Sequence[str],
    *,
    preds: Sequence[int] | torch.Tensor | None = None,
    ncols: int = 8,
    title: str = "Images",
) -> Figure:
    """A grid of images titled with the true (and predicted) class; wrong predictions in red."""
    plt = _pyplot()
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.9 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(_as_hwc(images[i]))
        true = class_names[int(labels[i])]
        if preds is None:
            ax.set_title(true, fontsize=7)
        else:
            pred = class_names[int(preds[i])]
            ax.set_title(f"true: {true}\npred: {pred}", fontsize=6, color="green" if pred == true else "red")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_filters(weight: torch.Tensor, title: str = "First-layer filters", ncols: int = 8) -> Figure:
    """Show RGB convolution filters (``out x 3 x k x k``) as small colour images."""
    plt = _pyplot()
    w = weight.detach().cpu().float()
    n = w.shape[0]
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.1 * ncols, 1.1 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            f = w[i]
            f = (f - f.min()) / (f.max() - f.min() + 1e-8)
            ax.imshow(f.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(str(i), fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_feature_maps(maps: Mapping[str, torch.Tensor], num_channels: int = 8, title: str = "Feature maps") -> Figure:
    """For each named layer, the first ``num_channels`` channels of one image's activation."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(maps), num_channels, figsize=(1.4 * num_channels, 1.6 * len(maps)), squeeze=False)
    for row, (name, act) in enumerate(maps.items()):
        a = act[0] if act.dim() == 4 else act
        for col in range(num_channels):
            ax = axes[row, col]
            ax.axis("off")
            if col < a.shape[0]:
                ax.imshow(a[col].cpu().float().numpy(), cmap="viridis")
            if col == 0:
                ax.set_title(f"{name} {tuple(a.shape[-2:])}", fontsize=7, loc="left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_embedding_2d(
    points: Mapping[str, np.ndarray], labels: np.ndarray, class_names: Sequence[str], title: str = "2-D map of features"
) -> Figure:
    """Scatter plots of 2-D embeddings (e.g. PCA of early vs late features), one panel per entry."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(points), figsize=(5.5 * len(points), 4.5), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (name, pts) in zip(axes[0], points.items()):
        for c, cls in enumerate(class_names):
            sel = labels == c
            ax.scatter(pts[sel, 0], pts[sel, 1], s=6, color=cmap(c % 10), label=cls, alpha=0.7)
        ax.set(title=name, xlabel="component 1", ylabel="component 2")
    axes[0, -1].legend(fontsize=7, markerscale=2, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
