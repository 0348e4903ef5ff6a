"""Feature extraction with a frozen backbone, an on-disk feature cache, and linear probes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from tl_helpers.data import ImageTensors, device_transform, make_loader
from tl_helpers.device import to_device
from tl_helpers.files import load_or_build, sha256_text, tensor_digest
from tl_helpers.models import get_preprocessing
from tl_helpers.paths import cache_dir

__all__ = [
    "FEATURE_CACHE_FORMAT",
    "cached_features",
    "extract_features",
    "feature_cache_key",
    "fit_logistic_regression",
    "head_accuracy",
    "layer_outputs",
    "nearest_class_mean",
    "pooled_features",
    "train_linear_head",
]


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled, pre-classifier features of a batch (timm ``forward_head(pre_logits=True)``)."""
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        return model.forward_head(model.forward_features(x), pre_logits=True)
    head_holder = [(n, m) for n, m in model.named_children() if n in ("fc", "classifier", "head", "heads")]
    if not head_holder:
        raise ValueError(f"Don't know how to take pooled features from {type(model).__name__}")
    name, head = head_holder[-1]
    setattr(model, name, nn.Identity())
    try:
        return model(x)
    finally:
        setattr(model, name, head)


@torch.no_grad()
def extract_features(
    model: nn.Module, loader: DataLoader, device: torch.device | str, *, progress: bool = True, desc: str = "features"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the frozen backbone once over ``loader`` (eval mode) and return ``(X, y)`` on the CPU.

    A loader from ``make_loader(..., on_device=True)`` has its uint8 batches converted on ``device``.
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    transform = device_transform(loader)
    was_training = model.training
    model.eval().to(device)
    xs, ys = [], []
    try:
        for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False):
            xs.append(pooled_features(model, to_device(x, device, transform=transform)).float())
            ys.append(y)
    finally:
        model.train(was_training)
    return torch.cat(xs).cpu(), torch.cat(ys)  # one copy back, not one wait per batch


FEATURE_CACHE_FORMAT = 3  # 2: keyed by the images' content, {key, value} entries; 3: and by the code running the model


def feature_cache_key(
    model: nn.Module,
    data: ImageTensors,
    *,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str,
) -> str:
    """What cached features depend on: the exact weights, the code that runs them, the preprocessing, the pixels.

    The images and labels are hashed by content (:func:`tl_helpers.files.tensor_digest`), so
    two splits with the same file names and different pixels (a transformed copy, a
    colour-shifted or augmented set) never share features. The code is the class of every module
    and the torch version: the same weights run as ``nn.Conv2d`` or as
    :class:`tl_helpers.pointwise.PointwiseConv2d`, or by another torch, give features that differ in
    the last bits, and a cache must give back exactly what computing them gives.
    """
    state = model.state_dict()
    module_types = [f"{type(m).__module__}.{type(m).__qualname__}" for m in model.modules()]
    return sha256_text(
        FEATURE_CACHE_FORMAT,
        torch.__version__,
        *module_types,
        *state,
        tensor_digest(*state.values()),
        image_size,
        tuple(mean),
        tuple(std),
        interpolation,
        tensor_digest(data.images, data.labels),
    )


def cached_features(
    model: nn.Module,
    data: ImageTensors,
    *,
    image_size: int = 64,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    name: str = "split",
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of ``data``, computed once and cached on disk.

    The cache key (:func:`feature_cache_key`) covers the model's weights, the input
    size, the preprocessing and the content of the images and labels, so a different
    model, size, split or a changed copy of the same images never reuses a stale
    file; a corrupt cache file is rebuilt (:func:`tl_helpers.files.load_or_build`).
    """
    pre = get_preprocessing(model) if mean is None or std is None else None
    mean = tuple(mean) if mean is not None else pre.mean
    std = tuple(std) if std is not None else pre.std
    interpolation = pre.interpolation if pre is not None else "bicubic"
    key = feature_cache_key(model, data, image_size=image_size, mean=mean, std=std, interpolation=interpolation)
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"features-{name}-{image_size}px-{key[:16]}.pt"

    def build() -> dict[str, torch.Tensor]:
        loader = make_loader(
            data,
            batch_size=batch_size,
            mean=mean,
            std=std,
            image_size=image_size,
            interpolation=interpolation,
            device=device,
            on_device=torch.device(device).type == "cuda",  # uint8 copies; converted on the GPU
        )
        X, y = extract_features(model, loader, device, progress=progress, desc=f"features {name}")
        return {"X": X, "y": y}

    blob = load_or_build(path, key, build, what="feature cache")
    return blob["X"], blob["y"]


def fit_logistic_regression(
    X_train: torch.Tensor | np.ndarray,
    y_train: torch.Tensor | np.ndarray,
    *,
    C: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
    blas_threads: int | None = 1,
):
    """A scikit-learn pipeline (standardise, then multinomial logistic regression).

    The L-BFGS solver makes many tiny matrix products; on a small, busy CPU extra
    BLAS threads only wait for each other, so the fit runs with ``blas_threads``
    BLAS threads (``threadpoolctl``, installed with scikit-learn).

    Args:
        X_train: Features, ``N x D``.
        y_train: Labels, ``N``.
        C: Inverse regularisation strength (small ``C``: simpler model).
        max_iter: Solver iterations.
        seed: The solver's ``random_state``.
        blas_threads: BLAS threads during the fit (``None``: leave the setting as it is).

    Returns:
        The fitted pipeline; use ``.score(X, y)`` for accuracy.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    with threadpool_limits(limits=blas_threads, user_api="blas"):
        return clf.fit(np.asarray(X_train), np.asarray(y_train))


def train_linear_head(
    X_train: torch.Tensor,
    y_train: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 30,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
    hidden: int | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """Train a small torch head (linear, or one hidden layer) on cached features.

    Features are standardised inside the head (stored mean/std), so it can be
    applied directly to the backbone's pooled output.
    """
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    mean, std = X_train.mean(0), X_train.std(0).clamp_min(1e-6)
    layers: list[nn.Module] = []
    d = X_train.shape[1]
    if hidden:
        layers += [nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(dropout)]
        d = hidden
    layers.append(nn.Linear(d, num_classes))
    head = _StandardisedHead(mean, std, nn.Sequential(*layers))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    n = len(X_train)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            loss = loss_fn(head(X_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return head.eval()


class _StandardisedHead(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor, body: nn.Module):
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


@torch.no_grad()
def head_accuracy(head: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of a feature-space head."""
    head.eval()
    return float((head(X).argmax(1) == y).float().mean())


@torch.no_grad()
def nearest_class_mean(X_support: torch.Tensor, y_support: torch.Tensor, X_query: torch.Tensor) -> torch.Tensor:
    """Few-shot classification: label each query by the closest class-mean feature (cosine)."""
    Xs = nn.functional.normalize(X_support, dim=1)
    Xq = nn.functional.normalize(X_query, dim=1)
    classes = torch.unique(y_support)
    means = torch.stack([Xs[y_support == c].mean(0) for c in classes])
    means = nn.functional.normalize(means, dim=1)
    return classes[(Xq @ means.T).argmax(1)]


@torch.no_grad()
def layer_outputs(model: nn.Module, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Activations of named sub-modules for a batch, captured with forward hooks (eval mode)."""
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise KeyError(f"No module named {missing}; see [n for n, _ in model.named_modules()]")
    out: dict[str, torch.Tensor] = {}
    handles = [
        modules[name].register_forward_hook(lambda _m, _i, o, name=name: out.__setitem__(name, o.detach()))
        for name in layers
    ]
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: out[name] for name in layers}
