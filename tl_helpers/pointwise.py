"""Pointwise (1x1) convolutions computed as one matrix product where the feature map is small.

A 1x1 convolution with stride 1 is a matrix product: every position's channel vector times the
``(out, in)`` weight. On small images most of EfficientNet's 1x1 convolutions meet tiny feature maps
(at 32 px the last ten of them see 1x1 maps, the twelve before 2x2), and for those shapes PyTorch's
CPU convolution (oneDNN) is two to three times slower, forward and backward, than ``F.linear`` on the
same numbers laid out as ``(N*H*W, C)`` (``benchmarks/pointwise.py`` measures both). With channels_last
inputs that layout is a free view.

:func:`use_fast_pointwise` swaps a model's plain 1x1 ``nn.Conv2d`` modules for :class:`PointwiseConv2d`,
which takes the ``F.linear`` path on the CPU where the output has at most
:data:`MAX_POSITIONS` positions (4x4), and is a plain convolution otherwise: on other devices, on
larger maps, under tracing, export or ``torch.compile``. Parameters, state-dict keys, hooks and
``isinstance(m, nn.Conv2d)`` are unchanged; outputs and gradients agree with the convolution's to
float32 rounding (the same products added in another order), the output keeps the input's memory
format, and the same seed gives the same numbers from run to run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MAX_POSITIONS", "PointwiseConv2d", "pointwise_conv2d", "use_fast_pointwise", "use_plain_pointwise"]

MAX_POSITIONS = 16
"""Largest ``H * W`` taken as a matrix product: at 4x4 the product was 1.5x faster, at 8x8 about even."""


def pointwise_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` for a 1x1 kernel, as ``F.linear`` over the positions.

    Args:
        x: ``(N, C_in, H, W)``.
        weight: ``(C_out, C_in, 1, 1)``.
        bias: ``(C_out,)`` or ``None``.

    Returns:
        ``(N, C_out, H, W)``, channels_last when ``x`` is, contiguous otherwise.
    """
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[2:] != (1, 1) or x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"pointwise_conv2d needs x (N, C, H, W) and weight (C_out, C, 1, 1); got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}. Fix: use F.conv2d for other convolutions."
        )
    n, c, h, w = x.shape
    out_channels = weight.shape[0]
    y = F.linear(x.permute(0, 2, 3, 1).reshape(n * h * w, c), weight.reshape(out_channels, c), bias)
    y = y.view(n, h, w, out_channels).permute(0, 3, 1, 2)  # channels_last strides
    return y if x.is_contiguous(memory_format=torch.channels_last) else y.contiguous()


def _matrix_product_pays(x: torch.Tensor) -> bool:
    """On the CPU, a 4-d input, at most MAX_POSITIONS positions, and not while tracing or compiling."""
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    return x.dim() == 4 and x.device.type == "cpu" and x.shape[-2] * x.shape[-1] <= MAX_POSITIONS


class PointwiseConv2d(nn.Conv2d):
    """A 1x1, stride-1 ``nn.Conv2d`` that is :func:`pointwise_conv2d` on small CPU feature maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if _matrix_product_pays(x):
            return pointwise_conv2d(x, self.weight, self.bias)
        return super().forward(x)


def _swappable(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.groups == 1
        and module.padding in ((0, 0), "valid")
    )


def use_fast_pointwise(model: nn.Module) -> int:
    """Swap ``model``'s plain 1x1 convolutions (in place) for :class:`PointwiseConv2d`.

    Only modules whose type is exactly ``nn.Conv2d``, with a 1x1 kernel, stride 1, one group and no
    padding, are swapped: only their class changes, so parameters, ``requires_grad``, optimizers built
    earlier, hooks, state-dict keys and the training mode are untouched. Calling it twice changes
    nothing the second time.

    Returns:
        How many modules were swapped.
    """
    swapped = 0
    for module in model.modules():
        if _swappable(module):
            module.__class__ = PointwiseConv2d
            swapped += 1
    return swapped


def use_plain_pointwise(model: nn.Module) -> int:
    """Undo :func:`use_fast_pointwise` (in place): back to ``nn.Conv2d``.

    Returns:
        How many modules were swapped back.
    """
    swapped = 0
    for module in model.modules():
        if type(module) is PointwiseConv2d:
            module.__class__ = nn.Conv2d
            swapped += 1
    return swapped
