"""Device, precision and seeding: the floor every other module stands on.

Nothing here runs at import time: no seeding, no device globals, no thread settings. Call
:func:`get_device` and pass the result explicitly to the helpers that need it.

CPU threads: torch starts one compute thread per CPU the process may run on, which ignores a
container's CPU quota, and its OpenMP threads spin while they wait. :func:`available_cpus` counts
the CPUs this process may really use (affinity and cgroup quota); :func:`configure_cpu_threads`
sizes torch's thread pools to it. :func:`get_device` and :func:`seed_everything`, which every
notebook calls first, call it once per process. How long waiting threads spin is set where kernels
start (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``, read only when torch loads; see
:data:`tl_helpers.runner.KERNEL_ENV`).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "BF16_MIN_CAPABILITY",
    "DEVICE_ENV",
    "Precision",
    "available_cpus",
    "bf16_supported",
    "choose_precision",
    "configure_cpu_threads",
    "cpu_quota",
    "describe",
    "get_device",
    "num_threads",
    "pin_memory_for",
    "seed_everything",
    "synchronize",
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
    _configure_cpu_threads_once()
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


BF16_MIN_CAPABILITY = 8  # Ampere (sm_80) and newer: bf16 tensor cores


def bf16_supported(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 autocast fast: CUDA compute capability 8.0 (Ampere) or newer.

    ``torch.cuda.is_bf16_supported()`` is not the test: it answers True on pre-Ampere GPUs
    (T4 is 7.5, V100 7.0) as well, where bf16 is emulated and slow; they want float16
    with a ``GradScaler`` instead. The compute capability tells them apart.
    """
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    major, _minor = torch.cuda.get_device_capability(device)
    return major >= BF16_MIN_CAPABILITY


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

    ``"auto"`` means: bfloat16 on GPUs of compute capability 8.0 or newer (no scaler
    needed), float16 with a scaler below that (T4, V100), float32 on CPU and MPS. On a laptop CPU
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
    _configure_cpu_threads_once()
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # seeds CUDA and MPS too when present
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def synchronize(device: torch.device | str) -> None:
    """Wait for ``device``'s queued work (CUDA and MPS run asynchronously); a no-op on CPU.

    Call it before reading a timer: otherwise a GPU timing measures how fast work was queued.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def pin_memory_for(device: torch.device) -> bool:
    """Pinned host memory only helps host-to-GPU copies."""
    return device.type == "cuda"


def to_device(
    x: torch.Tensor,
    device: torch.device,
    channels_last: bool = False,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Copy a batch to ``device`` (non-blocking from pinned memory), convert it there; optional channels_last.

    Args:
        x: The batch.
        device: Where it goes.
        channels_last: Return a 4-D batch in channels_last memory format.
        transform: Applied on ``device`` right after the copy: the float conversion, resizing and
            normalisation of a uint8 batch from ``make_loader(..., on_device=True)``
            (``tl_helpers.data.device_transform(loader)`` returns it).
    """
    device = torch.device(device)
    x = x.to(device, non_blocking=device.type == "cuda")
    if transform is not None:
        x = transform(x)
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


# ----------------------------------------------------------------------------- CPU threads

CGROUP_ROOT = "/sys/fs/cgroup"
_cpu_threads_configured = False


def cpu_quota(
    cgroup_root: str | os.PathLike = CGROUP_ROOT, proc_cgroup: str | os.PathLike = "/proc/self/cgroup"
) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (``1.5`` = one and a half CPUs), or ``None`` for no quota.

    Reads cgroup v2 ``cpu.max`` (``"max 100000"`` = no quota, ``"150000 100000"`` = 1.5 CPUs) and
    cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota ``-1`` = none), at the root of the
    hierarchy (what a container sees) and along this process's own cgroup path; the smallest wins.

    Args:
        cgroup_root: Where the cgroup file system is mounted.
        proc_cgroup: The file naming this process's cgroups (``/proc/self/cgroup``).
    """
    root = Path(cgroup_root)
    folders = [root, root / "cpu", root / "cpu,cpuacct"]
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:  # "0::/user.slice/..." (v2) or "4:cpu,cpuacct:/docker/..." (v1)
        parts = line.split(":", 2)
        if len(parts) != 3 or not parts[2].startswith("/") or parts[2] == "/":
            continue
        controllers = parts[1].split(",")
        bases = [root] if parts[1] == "" else [root / parts[1]] if "cpu" in controllers else []
        relative = Path(parts[2].lstrip("/"))
        for base in bases:
            folders += [base / relative, *(base / parent for parent in relative.parents if str(parent) != ".")]
    quotas = []
    for folder in folders:
        quota = _read_cpu_max(folder / "cpu.max")
        if quota is None:
            quota = _read_cfs(folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us")
        if quota is not None:
            quotas.append(quota)
    return min(quotas) if quotas else None


def _read_cpu_max(path: Path) -> float | None:
    try:
        fields = path.read_text().split()
        if len(fields) < 1 or fields[0] == "max":
            return None
        period = float(fields[1]) if len(fields) > 1 else 100_000.0
        quota = float(fields[0])
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read_cfs(quota_path: Path, period_path: Path) -> float | None:
    try:
        quota = float(quota_path.read_text().strip())
        period = float(period_path.read_text().strip())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus(cgroup_root: str | os.PathLike = CGROUP_ROOT) -> int:
    """How many CPUs this process may really use: its CPU affinity, capped by its cgroup's CPU quota.

    ``os.cpu_count()`` counts the machine's CPUs, not the ones a container or ``taskset`` leaves us.
    A fractional quota rounds up (1.5 CPUs -> 2 threads), as loky and the JVM do.

    Args:
        cgroup_root: Where the cgroup file system is mounted (tests point it at a fake one).
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        n = os.cpu_count() or 1
    quota = cpu_quota(cgroup_root)
    if quota is not None:
        n = min(n, math.ceil(quota))
    return max(1, n)


def _threads_from_env() -> int | None:
    try:
        value = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        return None
    return value if value > 0 else None


def configure_cpu_threads(n: int | None = None, *, lower_only: bool = False) -> int:
    """Size torch's CPU thread pools to the CPUs this process may use.

    More compute threads than usable CPUs make torch's threads wait for each other at every
    operation, far slower than fewer threads.

    Args:
        n: Threads to use; ``None``: :func:`available_cpus`, or ``OMP_NUM_THREADS`` when that is
            smaller (the grader sets it to share the CPUs between kernels).
        lower_only: Only ever reduce the thread count (keep a smaller one someone already chose).

    Returns:
        The intra-op thread count now in use.
    """
    if n is None:
        n = available_cpus()
        from_env = _threads_from_env()
        if from_env is not None:
            n = min(n, from_env)
    n = max(1, int(n))
    if torch.get_num_threads() > n or (torch.get_num_threads() < n and not lower_only):
        torch.set_num_threads(n)
    if torch.get_num_interop_threads() > n:
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # settable only once, before any inter-op work started
            pass
    return torch.get_num_threads()


def _configure_cpu_threads_once() -> None:
    """The first time :func:`get_device` or :func:`seed_everything` runs: no more threads than usable CPUs.

    Lower only: a smaller count chosen before (``torch.set_num_threads``, ``ddp --threads``) is kept.
    """
    global _cpu_threads_configured
    if not _cpu_threads_configured:
        _cpu_threads_configured = True
        configure_cpu_threads(lower_only=True)
