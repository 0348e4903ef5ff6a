import matplotlib

matplotlib.use("Agg")
import numpy as np
import torch

from tl_helpers import plots
from tl_helpers.train import History

CLASSES = [f"c{i}" for i in range(4)]


def _titles_and_labels(fig):
    return [ax.get_title() for ax in fig.axes], [ax.get_xlabel() for ax in fig.axes]


def test_history_plot_has_labelled_axes():
    h = History(train_loss=[1, 0.5], train_acc=[0.5, 0.7], val_loss=[1.1, 0.6], val_acc=[0.4, 0.6])
    fig = plots.plot_history({"a": h, "b": h})
    titles, xlabels = _titles_and_labels(fig)
    assert titles == ["Loss", "Accuracy"] and xlabels == ["epoch", "epoch"]
    assert len(fig.axes[0].lines) == 4


def test_confusion_matrix_counts_and_plot():
    cm = plots.confusion_matrix([0, 1, 1, 3], [0, 1, 2, 3], num_classes=4)
    assert cm.tolist() == [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    fig = plots.plot_confusion_matrix(cm, CLASSES)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted class" and [t.get_text() for t in ax.get_yticklabels()] == CLASSES


def test_image_grid_marks_mistakes():
    imgs = torch.randint(0, 255, (5, 3, 8, 8), dtype=torch.uint8)
    fig = plots.show_images(imgs, [0, 1, 2, 3, 0], CLASSES, preds=[0, 1, 0, 3, 0], ncols=3)
    colours = [ax.title.get_color() for ax in fig.axes if ax.get_title()]
    assert colours.count("red") == 1 and len(colours) == 5


def test_filters_feature_maps_embedding():
    assert len(plots.plot_filters(torch.randn(16, 3, 3, 3)).axes) == 16
    fig = plots.plot_feature_maps({"early": torch.randn(1, 8, 16, 16), "late": torch.randn(1, 8, 2, 2)}, 4)
    assert len(fig.axes) == 8
    pts = np.random.default_rng(0).normal(size=(20, 2))
    fig = plots.plot_embedding_2d({"early": pts, "late": pts}, np.arange(20) % 4, CLASSES)
    assert [ax.get_title() for ax in fig.axes] == ["early", "late"]
