"""Training and evaluation loops: ``fit``, ``evaluate``, ``predict``, checkpoints.

Device, precision and memory format are arguments (see
:func:`tl_helpers.device.choose_precision`), never read from globals. ``fit`` does
set two pieces of global state on purpose: torch's global RNG (reseeded every
epoch, below) and, on CUDA, ``torch.backends.cudnn.benchmark`` (left off when
``seed_everything(..., deterministic=True)`` asked for determinism).

The training step never waits for the GPU: losses and correct counts add up on the
device, and the host reads them every ``log_every`` steps (progress bar, divergence
check) and once at the end of the epoch. A loader made with
``make_loader(..., on_device=True)`` yields uint8 batches, which are copied
(non-blocking, from pinned memory) and converted to float, resized and normalised on
the device.

Under ``DistributedDataParallel`` the caller moves the model to its device and memory
format *before* wrapping it (``fit`` checks); only rank 0 writes checkpoints, and they
hold the unwrapped model's keys (no ``module.`` prefix), so one process can resume them.

``fit`` reads as its steps: prepare the model, check the optimizer, resume, then per
epoch seed, train, record, validate and checkpoint. ``evaluate`` and ``predict``
share one evaluation loop.

Provenance: ``fit`` notes on the model which images it trained on and how many optimizer
steps it took (:func:`training_record`), and every evaluation notes on the data it read which
weights were evaluated (:func:`evaluation_record`). Nothing else reads these notes but the
exercise checks (was the model trained on test images? were several models compared on the
test set?); they live on the objects themselves, so a copy of the model carries its record.

Reproducibility: ``fit`` reseeds torch's RNG and the loader's shuffling
generator at the start of every epoch from ``seed + epoch``. Each epoch is
therefore a pure function of the weights at its start, which is what makes a
run resumed from a checkpoint end with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from tl_helpers.device import Precision, choose_precision, to_device
from tl_helpers.files import atomic_torch_save

__all__ = [
    "EvalResult",
    "History",
    "cudnn_benchmark_setting",
    "evaluate",
    "evaluation_record",
    "fit",
    "load_checkpoint",
    "predict",
    "resize_batch",
    "save_checkpoint",
    "state_fingerprint",
    "training_record",
    "unwrap_model",
    "warmup_cosine",
]

LOG_EVERY = 25  # steps between the host's looks at the running loss (progress bar, divergence check)


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
    transform = _device_transform(loader)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, y in loader:
                x = to_device(x, device, channels_last=channels_last, transform=transform)
                y = y.to(device, non_blocking=device.type == "cuda")
                with precision.autocast():
                    logits = model(x)
                on_batch(logits, y)
    finally:
        model.train(was_training)
    _note_evaluation(model, loader)


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
    device = torch.device(device)
    # summed on the device and read once at the end: no host sync per batch
    loss_sum = torch.zeros((), device=device, dtype=_sum_dtype(device))
    correct = torch.zeros((), device=device, dtype=torch.int64)
    count = [0]

    def add(logits: torch.Tensor, y: torch.Tensor) -> None:
        loss_sum.add_(loss_fn(logits.float(), y).to(loss_sum.dtype) * len(y))
        correct.add_((logits.argmax(1) == y).sum())
        count[0] += len(y)

    _eval_loop(model, loader, device, amp, channels_last, add)
    n = count[0]
    if n == 0:
        raise ValueError("The evaluation loader yielded no samples.")
    return EvalResult(loss_sum.item() / n, correct.item() / n, n)


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


def _sum_dtype(device: torch.device) -> torch.dtype:
    """Running sums of losses in float64 (MPS has none: float32 there)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _device_transform(loader: DataLoader) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The conversion to run on the device after the copy (``make_loader(..., on_device=True)``), else ``None``.

    The rule of ``tl_helpers.data.device_transform``, read here by attribute (``train`` does not import ``data``).
    """
    collate = getattr(loader, "collate_fn", None)
    return collate.transform if getattr(collate, "on_device", False) else None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def _is_main_process() -> bool:
    """Rank 0 of a process group, or the only process."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


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
    """Write a checkpoint atomically (temp file, then rename).

    The model is unwrapped first (:func:`unwrap_model`): a checkpoint written under
    ``DistributedDataParallel`` has the same keys as one written by a single process.
    Writing is the caller's business; ``fit`` lets only rank 0 write.
    """
    state = {
        "model": unwrap_model(model).state_dict(),
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

    Loads into the unwrapped model, on one process or many; a ``module.`` prefix left by an
    older checkpoint written under ``DistributedDataParallel`` is removed.

    Returns:
        ``(epochs completed, history so far)``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RuntimeError(
            f"Checkpoint {path} is unreadable ({type(exc).__name__}: {exc}). Fix: delete it to start over."
        ) from exc
    weights = state["model"]
    nn.modules.utils.consume_prefix_in_state_dict_if_present(weights, "module.")
    unwrap_model(model).load_state_dict(weights)
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
    cudnn_benchmark: bool | None = None,
    image_sizes: Sequence[int] | None = None,
    log_every: int = LOG_EVERY,
) -> History:
    """Train ``model`` and return its :class:`History`.

    Args:
        model: The model (moved to ``device``; channels_last if chosen). A model wrapped in
            ``DistributedDataParallel`` must be on ``device``, in its memory format, already:
            convert it *before* wrapping it.
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
        checkpoint: Save a checkpoint here after every epoch (rank 0 only, unwrapped keys).
        resume: Continue from ``checkpoint`` if it exists.
        progress: Show tqdm progress bars (loss and accuracy refreshed every ``log_every`` steps).
        max_steps_per_epoch: Stop each epoch early (for quick demos and tests).
        compile: Wrap the model in ``torch.compile`` for the training steps (pays a
            one-off compile time; worth it on GPUs for long runs).
        cudnn_benchmark: On CUDA, let cuDNN pick the fastest kernels for our fixed
            input shapes. ``None`` (default): on, unless determinism was asked for
            (``seed_everything(seed, deterministic=True)``); then it stays off, even if ``True``.
        image_sizes: Progressive resizing: the input side length of every epoch
            (``len(image_sizes) == epochs``), e.g. ``[48, 64, 64, 96]``. Batches whose
            size differs are resized on ``device`` (bicubic, antialiased) before the
            forward pass. ``None`` trains at the loader's size.
        log_every: Steps between the host's reads of the running loss and accuracy (the
            progress bar and the divergence check); the only other read is at the epoch's end.

    Raises:
        ValueError: ``image_sizes`` does not give one positive size per epoch, the
            optimizer holds no trainable parameters, or a wrapped (DDP) model is not on
            ``device`` in the chosen memory format.
        FloatingPointError: the loss became NaN or infinite.
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

    if log_every < 1:
        raise ValueError(f"log_every must be at least 1, got {log_every}")
    transform = _device_transform(train_loader)

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
            transform=transform,
            log_every=log_every,
        )  # returns after reading the sums from the device, so the time below includes the GPU's work
        if scheduler is not None and not scheduler_per_step:
            scheduler.step()
        _record_epoch(history, stats, optimizer, time.perf_counter() - t0)
        _note_training(model, train_loader, steps, first_epoch=epoch == start)
        if val_loader is not None:
            result = evaluate(model, val_loader, device, loss_fn=loss_fn, amp=amp, channels_last=channels_last)
            history.val_loss.append(result.loss)
            history.val_acc.append(result.accuracy)
        if checkpoint is not None and _is_main_process():
            save_checkpoint(
                checkpoint, model, optimizer, epoch=epoch + 1, history=history, scheduler=scheduler, scaler=scaler
            )
    return history


# ----------------------------------------------------------------------------- provenance

_PROVENANCE = "tl_provenance"  # the attribute holding the notes, on models and on image splits


def _files_of(loader: DataLoader) -> list[str] | None:
    files = getattr(getattr(loader, "dataset", None), "data", None)
    files = getattr(files, "files", None)
    return list(files) if isinstance(files, (list, tuple)) else None


def state_fingerprint(model: nn.Module) -> tuple[float, float]:
    """Two numbers that change whenever the model's weights change (sum and sum of squares of all parameters).

    Equal for a model and its deep copy; different after any optimizer step.
    """
    total, squares = 0.0, 0.0
    with torch.no_grad():
        for p in unwrap_model(model).parameters():
            q = p.detach().double()
            total += float(q.sum())
            squares += float((q * q).sum())
    return (round(total, 6), round(squares, 6))


def training_record(model: nn.Module) -> dict:
    """What :func:`fit` did to ``model``: ``{"trained_on": set of file names, "steps": optimizer steps,
    "fit_calls": calls}`` (empty set and zeros for a model ``fit`` never trained; a copy, safe to change)."""
    note = unwrap_model(model).__dict__.get(_PROVENANCE, {})
    return {
        "trained_on": set(note.get("trained_on", ())),
        "steps": int(note.get("steps", 0)),
        "fit_calls": int(note.get("fit_calls", 0)),
    }


def evaluation_record(data: object) -> list[tuple[float, float]]:
    """The :func:`state_fingerprint` of every model evaluated on ``data`` (an image split) by
    :func:`evaluate`, :func:`predict` or ``fit``'s validation, in order (a copy)."""
    note = getattr(data, "__dict__", {}).get(_PROVENANCE, {})
    return list(note.get("evaluated", ()))


def _note_training(model: nn.Module, loader: DataLoader, steps: int, first_epoch: bool) -> None:
    note = unwrap_model(model).__dict__.setdefault(_PROVENANCE, {})
    files = _files_of(loader)
    if files is not None:
        note.setdefault("trained_on", set()).update(files)
    note["steps"] = int(note.get("steps", 0)) + int(steps)
    if first_epoch:
        note["fit_calls"] = int(note.get("fit_calls", 0)) + 1


def _note_evaluation(model: nn.Module, loader: DataLoader) -> None:
    data = getattr(getattr(loader, "dataset", None), "data", None)
    if data is None or not hasattr(data, "__dict__"):
        return
    data.__dict__.setdefault(_PROVENANCE, {}).setdefault("evaluated", []).append(state_fingerprint(model))


# ----------------------------------------------------------------------------- the steps of fit


def _prepare_model(
    model: nn.Module, device: torch.device, channels_last: bool, *, compile: bool, cudnn_benchmark: bool
) -> nn.Module:
    """Move the model to the device (and memory format); return what the training steps call.

    A wrapped model (``DistributedDataParallel``) is only checked, never converted: DDP
    registers its parameters' layout when it wraps them, so converting afterwards breaks
    its gradient buckets.
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        _check_wrapped(unwrap_model(model), device, channels_last)
    else:
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = cudnn_benchmark_setting(cudnn_benchmark)
    return torch.compile(model) if compile else model


def _check_wrapped(module: nn.Module, device: torch.device, channels_last: bool) -> None:
    fix = (
        "Fix: model.to(device, memory_format=torch.channels_last) (or without it, and fit(..., channels_last=False)) "
        "before DistributedDataParallel(model)."
    )
    for name, p in module.named_parameters():
        if p.device.type != device.type or (device.index is not None and p.device.index != device.index):
            raise ValueError(f"The wrapped model's parameter {name} is on {p.device}, not {device}. {fix}")
        if channels_last and p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last):
            raise ValueError(f"The wrapped model's parameter {name} is not channels_last. {fix}")


def cudnn_benchmark_setting(requested: bool | None) -> bool:
    """Whether cuDNN may benchmark kernels: ``requested``, but never when determinism was asked for.

    ``seed_everything(seed, deterministic=True)`` turns on deterministic algorithms and
    turns cuDNN's benchmarking off; benchmarking picks kernels by timing them, so it
    would bring run-to-run variation back.
    """
    deterministic = torch.are_deterministic_algorithms_enabled() or torch.backends.cudnn.deterministic
    if not deterministic:
        return True if requested is None else bool(requested)
    if requested:
        warnings.warn(
            "cudnn_benchmark=True ignored: determinism was asked for (seed_everything(..., deterministic=True)), "
            "and cuDNN's benchmarking would undo it.",
            stacklevel=3,
        )
    return False


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


class _RunningStats:
    """Loss and accuracy sums kept on the device; :meth:`read` is the only place the host waits for them."""

    def __init__(self, device: torch.device):
        self.loss_sum = torch.zeros((), device=device, dtype=_sum_dtype(device))
        self.correct = torch.zeros((), device=device, dtype=torch.int64)
        self.first_bad_step = torch.full((), -1, device=device, dtype=torch.int64)
        self.first_bad_loss = torch.zeros((), device=device, dtype=torch.float32)
        self.n = 0

    def add(self, step: int, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        loss = loss.detach()
        first = (self.first_bad_step < 0) & ~torch.isfinite(loss)
        self.first_bad_step = torch.where(first, step, self.first_bad_step)
        self.first_bad_loss = torch.where(first, loss.float(), self.first_bad_loss)
        self.loss_sum.add_(loss.to(self.loss_sum.dtype) * len(y))
        self.correct.add_((logits.argmax(1) == y).sum())
        self.n += len(y)

    def read(self, where: str) -> _EpochStats:
        """Copy the sums to the host (one sync); raise if a loss was not finite."""
        bad_step = int(self.first_bad_step.item())
        if bad_step >= 0:
            raise FloatingPointError(
                f"Loss became {self.first_bad_loss.item()} at {where}, step {bad_step}: the learning "
                "rate is probably far too high."
            )
        return _EpochStats(self.loss_sum.item(), int(self.correct.item()), self.n)


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
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    log_every: int = LOG_EVERY,
) -> _EpochStats:
    """``steps`` optimizer steps over ``train_loader`` (a per-step ``scheduler`` steps after each).

    Nothing here waits for the device but the reads every ``log_every`` steps and at the end.
    """
    from tqdm.auto import tqdm

    running = _RunningStats(device)
    where = desc.split("/")[0]
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    try:
        for step, (x, y) in enumerate(train_loader):
            if step >= steps:
                break
            x = resize_batch(to_device(x, device, transform=transform), image_size)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=device.type == "cuda")
            with precision.autocast():
                logits = step_model(x)
                loss = loss_fn(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler is not None:
                scheduler.step()
            running.add(step, loss, logits, y)
            bar.update(1)
            if (step + 1) % log_every == 0:
                seen = running.read(where)
                bar.set_postfix(loss=f"{seen.loss_sum / seen.n:.3f}", acc=f"{seen.correct / seen.n:.3f}")
        stats = running.read(where)
    finally:
        bar.close()
    return stats


def _record_epoch(history: History, stats: _EpochStats, optimizer: torch.optim.Optimizer, elapsed: float) -> None:
    history.train_loss.append(stats.loss_sum / max(stats.n, 1))
    history.train_acc.append(stats.correct / max(stats.n, 1))
    history.lr.append(float(optimizer.param_groups[-1]["lr"]))
    history.epoch_time.append(elapsed)
    history.images_per_sec.append(stats.n / elapsed if elapsed > 0 else float("nan"))
