"""Device, precision and seeding: the floor every other module stands on.

Nothing here runs at import time: no seeding, no device globals. Call
:func:`get_device` and pass the result explicitly to the helpers that need it.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "DEVICE_ENV",
    "Precision",
    "bf16_supported",
    "choose_precision",
    "describe",
    "get_device",
    "num_threads",
    "pin_memory_for",
    "seed_everything",
    "to_device",
]

DEVICE_ENV = "TL_DEVICE"


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Pick the best available device: cuda, else mps, else cpu.

    Args:
        prefer: Force a device ("cpu", "cuda", "cuda:1", "mps"). When ``None``,
            the ``TL_DEVICE`` environment variable is used if set.

    Returns:
        The chosen :class:`torch.device`.

    Raises:
        RuntimeError: if the requested device is not available here.
    """
    choice = prefer if prefer is not None else os.environ.get(DEVICE_ENV) or None
    if choice is not None:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"Device {str(device)!r} was requested (argument or ${DEVICE_ENV}) but CUDA is "
                "not available here. Use 'cpu', or unset TL_DEVICE to pick automatically."
            )
        if device.type == "mps" and not _mps_available():
            raise RuntimeError(
                f"Device 'mps' was requested (argument or ${DEVICE_ENV}) but MPS is not "
                "available here. Use 'cpu', or unset TL_DEVICE to pick automatically."
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 autocast fast (Ampere or newer GPUs)."""
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@dataclass(frozen=True)
class Precision:
    """What mixed precision to use on one device.

    Attributes:
        device_type: "cuda", "mps" or "cpu" (the string autocast wants).
        dtype: The autocast dtype, or ``None`` for plain float32.
        use_scaler: Whether a ``GradScaler`` is needed (only for float16).
    """

    device_type: str
    dtype: torch.dtype | None
    use_scaler: bool

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context for a forward pass (a no-op when disabled)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only when float16 needs it."""
        return torch.amp.GradScaler(self.device_type, enabled=self.use_scaler)


def choose_precision(device: torch.device, amp: bool | str | torch.dtype = "auto") -> Precision:
    """Decide the autocast dtype and whether a GradScaler is needed.

    ``"auto"`` means: bfloat16 on GPUs that support it (no scaler needed),
    float16 with a scaler on older GPUs, float32 on CPU and MPS. On a laptop CPU
    without bf16 matrix units, bf16 autocast is usually *slower* than float32,
    so we leave it off there unless asked.

    Args:
        device: The device training runs on.
        amp: ``"auto"``, ``True`` (same as auto but also bf16 on CPU),
            ``False`` (float32), or an explicit dtype.
    """
    if amp is False or amp is None:
        return Precision(device.type, None, False)
    if isinstance(amp, torch.dtype):
        dtype = amp
    elif amp == "auto" or amp is True:
        if device.type == "cuda":
            dtype = torch.bfloat16 if bf16_supported(device) else torch.float16
        elif device.type == "cpu" and amp is True:
            dtype = torch.bfloat16
        else:
            dtype = None
    else:
        raise ValueError(f"amp must be 'auto', True, False or a torch dtype, got {amp!r}")
    use_scaler = dtype == torch.float16 and device.type == "cuda"
    return Precision(device.type, dtype, use_scaler)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); safe without CUDA.

    Args:
        seed: The seed.
        deterministic: Also ask torch for deterministic algorithms (slower on
            GPU; on CPU the course's code is deterministic already).
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # seeds CUDA and MPS too when present
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def pin_memory_for(device: torch.device) -> bool:
    """Pinned host memory only helps host-to-GPU copies."""
    return device.type == "cuda"


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """Copy a batch to ``device`` (non-blocking from pinned memory); optional channels_last."""
    x = x.to(device, non_blocking=device.type == "cuda")
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def describe(device: torch.device) -> str:
    """One line naming the device (GPU name, or CPU threads)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (``None`` leaves it)."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
