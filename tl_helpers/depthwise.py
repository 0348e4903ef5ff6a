"""Depthwise convolutions whose weight gradient stays fast on a CPU.

EfficientNet's depthwise 3x3 and 5x5 convolutions meet small images in the last stages: at 48 px
the last stage's feature maps are 2x2, smaller than the 5x5 kernel. oneDNN's depthwise kernel does not
take such shapes (``ONEDNN_VERBOSE=1`` shows ``gemm:jit`` instead of ``jit_dw``), so PyTorch's CPU weight
gradient falls back to one tiny matrix product per channel: on a 2-core CPU one call took 10-35 ms
where the forward pass took 0.2 ms, and those few layers cost about half of each training step
(``benchmarks/depthwise.py`` measures it). The weight gradient of a depthwise convolution is a sum
over kernel offsets of ``x`` shifted times ``grad_out``, which is cheap to compute directly when the
output is that small.

:func:`use_fast_depthwise` swaps a model's depthwise ``nn.Conv2d`` / timm ``Conv2dSame`` modules for
subclasses that compute exactly that, on the CPU, only when the output is smaller than the kernel
(where the direct sum wins) and only while a weight gradient is being recorded. The forward pass
is the same call as before; the input gradient is PyTorch's own; off the CPU, in inference, under
autocast, tracing, export or ``torch.compile`` the modules are plain convolutions. Parameters, state-dict
keys and ``isinstance(m, nn.Conv2d)`` are unchanged. The weight gradients agree with PyTorch's to
float32 rounding (they add the same products in another order), and the same seed gives the same
numbers from run to run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from timm.layers.padding import pad_same
from torch import nn

__all__ = [
    "DepthwiseConv2d",
    "DepthwiseConv2dSame",
    "depthwise_conv2d",
    "depthwise_weight_grad",
    "use_fast_depthwise",
    "use_plain_depthwise",
]


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def depthwise_weight_grad(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
) -> torch.Tensor:
    """The gradient of a depthwise convolution's weight, as a sum over kernel offsets.

    ``grad_w[c, 0, i, j] = sum over n, h, w of grad_out[n, c, h, w] * x_padded[n, c, s*h + i, s*w + j]``;
    offsets whose window lies wholly in the zero padding are skipped (their gradient is zero).

    Args:
        x: The convolution's input, ``(N, C, H, W)``.
        grad_out: The gradient of its output, ``(N, C, H_out, W_out)``.
        kernel_size: ``(kh, kw)``.
        stride: ``(sh, sw)``.
        padding: ``(ph, pw)``, zeros on both sides.

    Returns:
        ``(C, 1, kh, kw)``, in ``x``'s dtype.
    """
    kh, kw = kernel_size
    sh, sw = stride
    ph, pw = padding
    _, channels, height, width = x.shape
    out_h, out_w = grad_out.shape[-2:]
    grad = x.new_zeros(channels, kh, kw)

    def valid(offset: int, pad: int, step: int, size: int, out_size: int) -> tuple[int, int]:
        # output positions o with 0 <= step*o + offset - pad <= size - 1
        lo = max(0, -((offset - pad) // step))
        hi = min(out_size - 1, (size - 1 + pad - offset) // step)
        return lo, hi

    for i in range(kh):
        h_lo, h_hi = valid(i, ph, sh, height, out_h)
        if h_lo > h_hi:
            continue
        for j in range(kw):
            w_lo, w_hi = valid(j, pw, sw, width, out_w)
            if w_lo > w_hi:
                continue
            xs = x[
                :,
                :,
                sh * h_lo + i - ph : sh * h_hi + i - ph + 1 : sh,
                sw * w_lo + j - pw : sw * w_hi + j - pw + 1 : sw,
            ]
            gs = grad_out[:, :, h_lo : h_hi + 1, w_lo : w_hi + 1]
            grad[:, i, j] = (xs * gs).sum(dim=(0, 2, 3))
    return grad.unsqueeze(1)


class _DepthwiseConv2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: tuple[int, int],
        padding: tuple[int, int],
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None  # type: ignore[attr-defined]
        return F.conv2d(x, weight, bias, stride, padding, 1, weight.shape[0])

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor):  # type: ignore[override]
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        stride, padding = ctx.stride, ctx.padding  # type: ignore[attr-defined]
        needs = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_x = grad_w = grad_b = None
        if needs[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, list(stride), list(padding), [1, 1], False, [0, 0], weight.shape[0],
                [True, False, False],
            )[0]  # fmt: skip
        if needs[1]:
            grad_w = depthwise_weight_grad(x, grad_out, tuple(weight.shape[-2:]), stride, padding)
        if ctx.has_bias and needs[2]:  # type: ignore[attr-defined]
            grad_b = grad_out.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


def depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, stride, padding, groups=C)``, its weight gradient by :func:`depthwise_weight_grad`.

    Args:
        x: ``(N, C, H, W)``.
        weight: ``(C, 1, kh, kw)``: one filter per channel (a depth multiplier of 1).
        bias: ``(C,)`` or ``None``.
        stride: Stride.
        padding: Zero padding on both sides.
    """
    if weight.dim() != 4 or weight.shape[1] != 1 or x.dim() != 4 or x.shape[1] != weight.shape[0]:
        raise ValueError(
            f"depthwise_conv2d needs x (N, C, H, W) and weight (C, 1, kh, kw); got {tuple(x.shape)} and "
            f"{tuple(weight.shape)}. Fix: use F.conv2d(..., groups=...) for other convolutions."
        )
    return _DepthwiseConv2dFunction.apply(x, weight, bias, _pair(stride), _pair(padding))


def _direct_sum_pays(module: nn.Conv2d, x: torch.Tensor, out_size: tuple[int, int]) -> bool:
    """On the CPU, recording a weight gradient, and the output smaller than the kernel."""
    if (
        x.device.type != "cpu"
        or not torch.is_grad_enabled()
        or not module.weight.requires_grad
        or torch.is_autocast_enabled("cpu")  # bfloat16 autocast: PyTorch's own path handles the casts
        or torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.compiler.is_compiling()
    ):
        return False
    kh, kw = module.kernel_size
    return out_size[0] < kh or out_size[1] < kw


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` whose weight gradient on the CPU is :func:`depthwise_weight_grad` where that pays."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.dim() == 4:
            (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, _pair(self.padding)  # type: ignore[arg-type]
            out_size = ((x.shape[-2] + 2 * ph - kh) // sh + 1, (x.shape[-1] + 2 * pw - kw) // sw + 1)
            if _direct_sum_pays(self, x, out_size):
                return depthwise_conv2d(x, self.weight, self.bias, (sh, sw), (ph, pw))
        return super().forward(x)


class DepthwiseConv2dSame(Conv2dSame):
    """timm's TensorFlow-"SAME" depthwise convolution, with :class:`DepthwiseConv2d`'s weight gradient."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if x.dim() == 4:
            sh, sw = self.stride
            out_size = (-(-x.shape[-2] // sh), -(-x.shape[-1] // sw))  # "SAME": ceil(size / stride)
            if _direct_sum_pays(self, x, out_size):
                padded = pad_same(x, self.weight.shape[-2:], self.stride, self.dilation)
                return depthwise_conv2d(padded, self.weight, self.bias, (sh, sw), (0, 0))
        return super().forward(x)


_SWAPS: dict[type, type] = {nn.Conv2d: DepthwiseConv2d, Conv2dSame: DepthwiseConv2dSame}


def _swappable(module: nn.Module) -> bool:
    return (
        type(module) in _SWAPS
        and isinstance(module, nn.Conv2d)
        and module.groups == module.in_channels == module.out_channels
        and module.groups > 1
        and _pair(module.dilation) == (1, 1)  # type: ignore[arg-type]
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def use_fast_depthwise(model: nn.Module) -> int:
    """Swap ``model``'s depthwise convolutions (in place) for :class:`DepthwiseConv2d` / :class:`DepthwiseConv2dSame`.

    Only modules whose type is exactly ``nn.Conv2d`` or timm's ``Conv2dSame``, with one filter per channel,
    no dilation and zero padding, are swapped: only their class changes, so parameters, ``requires_grad``,
    optimizers built earlier, hooks, state-dict keys and the training mode are untouched. Calling it
    twice changes nothing the second time.

    Returns:
        How many modules were swapped.
    """
    swapped = 0
    for module in model.modules():
        if _swappable(module):
            module.__class__ = _SWAPS[type(module)]
            swapped += 1
    return swapped


def use_plain_depthwise(model: nn.Module) -> int:
    """Undo :func:`use_fast_depthwise` (in place): back to ``nn.Conv2d`` / timm's ``Conv2dSame``.

    Returns:
        How many modules were swapped back.
    """
    plain = {fast: original for original, fast in _SWAPS.items()}
    swapped = 0
    for module in model.modules():
        if type(module) in plain:
            module.__class__ = plain[type(module)]
            swapped += 1
    return swapped
