"""Training and evaluation loops: ``fit``, ``evaluate``, ``predict``, checkpoints.

Device, precision and memory format are arguments (see
:func:`tl_helpers.device.choose_precision`), never read from globals. ``fit`` does
set two pieces of global state on purpose: torch's global RNG (reseeded every
epoch, below) and, on CUDA, ``torch.backends.cudnn.benchmark``.

``fit`` reads as its steps: prepare the model, check the optimizer, resume, then per
epoch seed, train, record, validate and checkpoint. ``evaluate`` and ``predict``
share one evaluation loop.

Reproducibility: ``fit`` reseeds torch's RNG and the loader's shuffling
generator at the start of every epoch from ``seed + epoch``. Each epoch is
therefore a pure function of the weights at its start, which is what makes a
run resumed from a checkpoint end with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from tl_helpers.device import Precision, choose_precision, to_device
from tl_helpers.files import atomic_torch_save

__all__ = [
    "EvalResult",
    "History",
    "evaluate",
    "fit",
    "load_checkpoint",
    "predict",
    "resize_batch",
    "save_checkpoint",
    "warmup_cosine",
]


@dataclass
class History:
    """Per-epoch metrics of a :func:`fit` run."""

    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    images_per_sec: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    @property
    def total_time(self) -> float:
        return float(sum(self.epoch_time))

    def to_dict(self) -> dict[str, list[float]]:
        return asdict(self)


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    num_samples: int


def _eval_loop(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    amp: bool | str | torch.dtype,
    channels_last: bool | None,
    on_batch: Callable[[torch.Tensor, torch.Tensor], None],
) -> None:
    """The one evaluation loop: ``on_batch(logits, labels)`` for every batch, in eval mode, without gradients.

    Inputs and labels go to ``device`` (channels_last as chosen), the forward pass runs
    under the device's autocast; the model's train/eval mode is restored afterwards.
    """
    precision = choose_precision(device, amp)
    channels_last = _default_channels_last(device) if channels_last is None else channels_last
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, y in loader:
                x = to_device(x, device, channels_last=channels_last)
                y = y.to(device, non_blocking=device.type == "cuda")
                with precision.autocast():
                    logits = model(x)
                on_batch(logits, y)
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | str,
    *,
    loss_fn: Callable | None = None,
    amp: bool | str = "auto",
    channels_last: bool | None = None,
) -> EvalResult:
    """Average loss and accuracy of ``model`` on ``loader`` in eval mode (restores the mode after)."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    total = {"loss": 0.0, "correct": 0, "n": 0}

    def add(logits: torch.Tensor, y: torch.Tensor) -> None:
        total["loss"] += float(loss_fn(logits.float(), y)) * len(y)
        total["correct"] += int((logits.argmax(1) == y).sum())
        total["n"] += len(y)

    _eval_loop(model, loader, torch.device(device), amp, channels_last, add)
    n = total["n"]
    if n == 0:
        raise ValueError("The evaluation loader yielded no samples.")
    return EvalResult(total["loss"] / n, total["correct"] / n, n)


def predict(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device | str,
    *,
    amp: bool | str = "auto",
    channels_last: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predictions in eval mode.

    Returns:
        ``(predicted labels, true labels, softmax probabilities)`` on the CPU.
    """
    preds, labels, probs = [], [], []

    def add(logits: torch.Tensor, y: torch.Tensor) -> None:
        p = logits.float().softmax(1).cpu()
        probs.append(p)
        preds.append(p.argmax(1))
        labels.append(y.cpu())

    _eval_loop(model, loader, torch.device(device), amp, channels_last, add)
    return torch.cat(preds), torch.cat(labels), torch.cat(probs)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule: linear warm-up to each group's LR, then cosine decay to zero.

    Notebook 05 builds it by hand; this is the same schedule for reuse. Step it after
    every batch (``fit(..., scheduler=..., scheduler_per_step=True)``, the default).

    Args:
        optimizer: Its groups' ``lr`` values are the peak learning rates.
        total_steps: Optimizer steps in the whole run (``epochs * len(train_loader)``).
        warmup_steps: Steps of linear warm-up from ``lr / warmup_steps`` to ``lr``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be between 0 and total_steps={total_steps}, got {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _default_channels_last(device: torch.device) -> bool:
    # channels_last: ~2x faster training and eval of EfficientNet-Lite0 on this 2-core CPU
    # (depthwise convolutions in oneDNN), and the usual win on CUDA. MPS support is patchy.
    return device.type in ("cuda", "cpu")


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epoch: int,
    history: History,
    scheduler: object | None = None,
    scaler: object | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file, then rename)."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "history": history.to_dict(),
    }
    return atomic_torch_save(state, path)


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    scheduler: object | None = None,
    scaler: object | None = None,
) -> tuple[int, History]:
    """Restore a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Returns:
        ``(epochs completed, history so far)``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RuntimeError(
            f"Checkpoint {path} is unreadable ({type(exc).__name__}: {exc}). Fix: delete it to start over."
        ) from exc
    model.load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    return int(state["epoch"]), History(**state["history"])


def fit(
    model: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    device: torch.device | str,
    scheduler: object | None = None,
    loss_fn: Callable | None = None,
    amp: bool | str | torch.dtype = "auto",
    channels_last: bool | None = None,
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    scheduler_per_step: bool = True,
    progress: bool = True,
    max_steps_per_epoch: int | None = None,
    compile: bool = False,
    cudnn_benchmark: bool = True,
    image_sizes: Sequence[int] | None = None,
) -> History:
    """Train ``model`` and return its :class:`History`.

    Args:
        model: The model (moved to ``device``; channels_last if chosen).
        train_loader: Training batches.
        val_loader: Validation batches, evaluated after each epoch (or ``None``).
        optimizer: Built on the parameters that should train.
        epochs: Total number of epochs (when resuming, the remaining ones run).
        device: Where to train.
        scheduler: Optional LR scheduler, stepped per batch (``scheduler_per_step``) or per epoch.
        loss_fn: Defaults to cross-entropy.
        amp: Mixed precision: "auto" (bf16/fp16 on CUDA, fp32 on CPU), True, False or a dtype.
        channels_last: Memory format (default: on CUDA and CPU, not on MPS).
        seed: Seeds each epoch (``seed + epoch``) for shuffling, augmentation and dropout.
        checkpoint: Save a checkpoint here after every epoch.
        resume: Continue from ``checkpoint`` if it exists.
        progress: Show tqdm progress bars.
        max_steps_per_epoch: Stop each epoch early (for quick demos and tests).
        compile: Wrap the model in ``torch.compile`` for the training steps (pays a
            one-off compile time; worth it on GPUs for long runs).
        cudnn_benchmark: On CUDA, let cuDNN pick the fastest kernels for our fixed
            input shapes (turn off for bit-exact reproducibility).
        image_sizes: Progressive resizing: the input side length of every epoch
            (``len(image_sizes) == epochs``), e.g. ``[48, 64, 64, 96]``. Batches whose
            size differs are resized on ``device`` (bicubic, antialiased) before the
            forward pass. ``None`` trains at the loader's size.

    Raises:
        ValueError: ``image_sizes`` does not give one positive size per epoch, or the
            optimizer holds no trainable parameters.
    """
    device = torch.device(device)
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    precision = choose_precision(device, amp)
    scaler = precision.grad_scaler()
    channels_last = _default_channels_last(device) if channels_last is None else channels_last
    step_model = _prepare_model(model, device, channels_last, compile=compile, cudnn_benchmark=cudnn_benchmark)
    _require_trainable(optimizer)
    sizes = _epoch_sizes(image_sizes, epochs)
    history, start = History(), 0
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        start, history = load_checkpoint(checkpoint, model, optimizer, scheduler=scheduler, scaler=scaler)

    for epoch in range(start, epochs):
        _seed_epoch(train_loader, seed, epoch)
        model.train()
        t0 = time.perf_counter()
        steps = len(train_loader) if max_steps_per_epoch is None else min(len(train_loader), max_steps_per_epoch)
        stats = _train_epoch(
            step_model,
            train_loader,
            optimizer,
            loss_fn,
            precision,
            scaler,
            device,
            channels_last,
            steps=steps,
            scheduler=scheduler if scheduler_per_step else None,
            desc=f"epoch {epoch + 1}/{epochs}",
            progress=progress,
            image_size=sizes[epoch],
        )
        if scheduler is not None and not scheduler_per_step:
            scheduler.step()
        _record_epoch(history, stats, optimizer, time.perf_counter() - t0)
        if val_loader is not None:
            result = evaluate(model, val_loader, device, loss_fn=loss_fn, amp=amp, channels_last=channels_last)
            history.val_loss.append(result.loss)
            history.val_acc.append(result.accuracy)
        if checkpoint is not None:
            save_checkpoint(
                checkpoint, model, optimizer, epoch=epoch + 1, history=history, scheduler=scheduler, scaler=scaler
            )
    return history


# ----------------------------------------------------------------------------- the steps of fit


def _prepare_model(
    model: nn.Module, device: torch.device, channels_last: bool, *, compile: bool, cudnn_benchmark: bool
) -> nn.Module:
    """Move the model to the device (and memory format); return what the training steps call."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark
    return torch.compile(model) if compile else model


def _require_trainable(optimizer: torch.optim.Optimizer) -> None:
    if not any(p.requires_grad for g in optimizer.param_groups for p in g["params"]):
        raise ValueError(
            "The optimizer holds no trainable parameters (empty, all frozen, or built from an "
            "exhausted model.parameters() generator). Rebuild it from the parameters to train."
        )


def _epoch_sizes(image_sizes: Sequence[int] | None, epochs: int) -> list[int | None]:
    """One input size per epoch (``None``: the loader's), checked against ``epochs``."""
    if image_sizes is None:
        return [None] * epochs
    sizes = [int(s) for s in image_sizes]
    if len(sizes) != epochs or any(s < 1 for s in sizes):
        raise ValueError(
            f"image_sizes must give one positive input size per epoch ({epochs} epochs), got {list(image_sizes)}"
        )
    return sizes


def resize_batch(x: torch.Tensor, image_size: int | None) -> torch.Tensor:
    """Resize a normalised ``N x C x H x W`` batch to ``image_size`` (bicubic, antialiased); a no-op when equal.

    ``fit(image_sizes=...)`` uses it for progressive resizing; evaluate at the last
    epoch's size (a loader built with ``image_size=image_sizes[-1]``).
    """
    if image_size is None or (x.shape[-2] == image_size and x.shape[-1] == image_size):
        return x
    return nn.functional.interpolate(
        x, size=(image_size, image_size), mode="bicubic", align_corners=False, antialias=True
    )


def _seed_epoch(train_loader: DataLoader, seed: int, epoch: int) -> None:
    """Seed torch's global RNG and the loader's shuffling from ``seed + epoch`` (what makes resume exact)."""
    torch.manual_seed(seed + epoch)
    generator = getattr(train_loader, "generator", None)
    if generator is not None:
        generator.manual_seed(seed + epoch)
    sampler = getattr(train_loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


@dataclass
class _EpochStats:
    loss_sum: float = 0.0
    correct: int = 0
    n: int = 0


def _train_epoch(
    step_model: nn.Module,
    train_loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable,
    precision: Precision,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    channels_last: bool,
    *,
    steps: int,
    scheduler: object | None,
    desc: str,
    progress: bool,
    image_size: int | None = None,
) -> _EpochStats:
    """``steps`` optimizer steps over ``train_loader`` (a per-step ``scheduler`` steps after each)."""
    from tqdm.auto import tqdm

    stats = _EpochStats()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    try:
        for step, (x, y) in enumerate(train_loader):
            if step >= steps:
                break
            x = resize_batch(to_device(x, device), image_size)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=device.type == "cuda")
            with precision.autocast():
                logits = step_model(x)
                loss = loss_fn(logits.float(), y)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(
                    f"Loss became {loss.item()} at {desc.split('/')[0]}, step {step}: the learning "
                    "rate is probably far too high."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            stats.loss_sum += loss.item() * len(y)
            stats.correct += int((logits.argmax(1) == y).sum())
            stats.n += len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{stats.loss_sum / stats.n:.3f}", acc=f"{stats.correct / stats.n:.3f}")
    finally:
        bar.close()
    return stats


def _record_epoch(history: History, stats: _EpochStats, optimizer: torch.optim.Optimizer, elapsed: float) -> None:
    history.train_loss.append(stats.loss_sum / max(stats.n, 1))
    history.train_acc.append(stats.correct / max(stats.n, 1))
    history.lr.append(float(optimizer.param_groups[-1]["lr"]))
    history.epoch_time.append(elapsed)
    history.images_per_sec.append(stats.n / elapsed if elapsed > 0 else float("nan"))
