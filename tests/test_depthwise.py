import copy
import io
import itertools

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from torch import nn

from tl_helpers import models
from tl_helpers.depthwise import (
    DepthwiseConv2d,
    DepthwiseConv2dSame,
    depthwise_conv2d,
    depthwise_weight_grad,
    use_fast_depthwise,
    use_plain_depthwise,
)


def _native_weight_grad(x, grad_out, weight, stride, padding):
    return torch.ops.aten.convolution_backward(
        grad_out, x, weight, None, list(stride), list(padding), [1, 1], False, [0, 0], weight.shape[0],
        [False, True, False],
    )[1]  # fmt: skip


@pytest.mark.parametrize("channels_last", [False, True])
def test_weight_grad_matches_pytorchs_for_every_offset_stride_and_padding(channels_last):
    torch.manual_seed(0)
    for k, s, p, size in itertools.product((1, 3, 5), (1, 2), (0, 1, 2), (1, 2, 3, 4, 5, 7, 9)):
        if size + 2 * p < k:
            continue
        x = torch.randn(3, 6, size, size + 1)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        weight = torch.randn(6, 1, k, k)
        out = F.conv2d(x, weight, None, s, p, 1, 6)
        grad_out = torch.randn_like(out)
        got = depthwise_weight_grad(x, grad_out, (k, k), (s, s), (p, p))
        want = _native_weight_grad(x, grad_out, weight, (s, s), (p, p))
        assert got.shape == want.shape == weight.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"k={k} s={s} p={p} size={size}")


def test_function_gives_conv2ds_output_and_all_three_gradients():
    torch.manual_seed(0)
    x = torch.randn(4, 8, 3, 3, requires_grad=True)
    weight = torch.randn(8, 1, 5, 5, requires_grad=True)
    bias = torch.randn(8, requires_grad=True)
    out = depthwise_conv2d(x, weight, bias, stride=2, padding=2)
    ref = F.conv2d(x, weight, bias, 2, 2, 1, 8)
    assert torch.equal(out, ref)
    grad_out = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, weight, bias), grad_out)
    want = torch.autograd.grad(ref, (x, weight, bias), grad_out)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_function_rejects_a_convolution_that_is_not_depthwise():
    with pytest.raises(ValueError, match="groups"):
        depthwise_conv2d(torch.randn(1, 4, 5, 5), torch.randn(8, 2, 3, 3))


def _pair_of_modules(cls_plain, cls_fast, **kwargs):
    torch.manual_seed(0)
    plain = cls_plain(**kwargs)
    fast = copy.deepcopy(plain)
    assert use_fast_depthwise(fast) == 1
    assert type(fast) is cls_fast
    return plain, fast


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace's deprecation notice
@pytest.mark.parametrize(
    ("cls_plain", "cls_fast", "kwargs"),
    [
        (nn.Conv2d, DepthwiseConv2d, {"padding": 2, "stride": 1}),
        (Conv2dSame, DepthwiseConv2dSame, {"stride": 2}),
    ],
)
def test_modules_switch_to_the_direct_sum_only_where_it_pays(cls_plain, cls_fast, kwargs):
    plain, fast = _pair_of_modules(cls_plain, cls_fast, in_channels=16, out_channels=16, kernel_size=5, groups=16,
                                   **kwargs)  # fmt: skip
    for size, direct in ((2, True), (3, True), (16, False)):
        x = torch.randn(2, 16, size, size, requires_grad=True)
        out_fast, out_plain = fast(x), plain(x)
        assert torch.equal(out_fast, out_plain)  # the forward pass is the same call
        assert ("DepthwiseConv2dFunction" in type(out_fast.grad_fn).__name__) is direct, (size, out_fast.grad_fn)
        grad_out = torch.randn_like(out_fast)
        got = torch.autograd.grad(out_fast, (x, fast.weight, fast.bias), grad_out)
        want = torch.autograd.grad(out_plain, (x, plain.weight, plain.bias), grad_out)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    x = torch.randn(2, 16, 2, 2)
    with torch.no_grad():
        assert torch.equal(fast(x), plain(x))
    fast.weight.requires_grad_(False)  # a frozen layer: PyTorch's own backward, nothing to gain
    assert "DepthwiseConv2dFunction" not in type(fast(x.requires_grad_()).grad_fn).__name__
    fast.weight.requires_grad_(True)
    traced = torch.jit.trace(fast, torch.randn(2, 16, 2, 2))  # tracing records a plain convolution
    torch.testing.assert_close(traced(x), plain(x))


def test_only_plain_depthwise_convolutions_are_swapped():
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, groups=8),  # depthwise: swapped
        nn.Conv2d(8, 16, 1),  # pointwise: kept
        nn.Conv2d(16, 32, 3, groups=16),  # a depth multiplier of 2: kept
        nn.Conv2d(8, 8, 3, groups=8, dilation=2),  # dilated: kept
        nn.Conv2d(8, 8, 3, groups=8, padding=1, padding_mode="reflect"),  # not zero padding: kept
        nn.Conv2d(8, 8, 3, groups=8, padding="same"),  # a string padding: kept
    )
    assert use_fast_depthwise(model) == 1
    assert [type(m) for m in model] == [DepthwiseConv2d] + [nn.Conv2d] * 5
    assert use_fast_depthwise(model) == 0  # twice changes nothing


def test_load_backbone_swaps_every_depthwise_convolution_and_nothing_else():
    model = models.load_backbone("efficientnet_lite0", pretrained=False)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    swapped = [n for n, m in model.named_modules() if isinstance(m, (DepthwiseConv2d, DepthwiseConv2dSame))]
    depthwise = [n for n, m in reference.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert swapped == depthwise and len(swapped) == 16
    assert list(model.state_dict()) == list(reference.state_dict())
    assert all(isinstance(model.get_submodule(n), nn.Conv2d) for n in swapped)


def test_a_backbone_trains_to_the_same_gradients_and_repeats_itself():
    def grads(fast: bool, seed: int = 0):
        torch.manual_seed(seed)
        model = models.load_backbone("efficientnet_lite0", pretrained=False, num_classes=4)
        if not fast:
            assert use_plain_depthwise(model) == 16  # back to the plain classes
            assert not any(type(m) in (DepthwiseConv2d, DepthwiseConv2dSame) for m in model.modules())
        model = model.to(memory_format=torch.channels_last).train()
        x = torch.randn(6, 3, 48, 48).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3, 0, 1]))
        loss.backward()
        return {n: p.grad for n, p in model.named_parameters()}

    fast, plain, again = grads(True), grads(False), grads(True)
    assert fast.keys() == plain.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)
        assert torch.equal(fast[name], again[name]), name  # same seed, same numbers


def test_swapped_model_survives_deepcopy_and_pickling():
    model = models.load_backbone("efficientnet_lite0", pretrained=False).eval()
    x = torch.randn(1, 3, 32, 32)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for other in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        assert type(other.blocks[6][0].conv_dw) is type(model.blocks[6][0].conv_dw)
        with torch.no_grad():
            assert torch.equal(other(x), model(x))


def test_under_cpu_autocast_the_modules_are_plain_convolutions():
    torch.manual_seed(0)
    plain = nn.Conv2d(8, 8, 5, padding=2, groups=8)
    fast = copy.deepcopy(plain)
    use_fast_depthwise(fast)
    x = torch.randn(2, 8, 2, 2, requires_grad=True)
    outs = []
    for module in (fast, plain):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = module(x)
        assert out.dtype == torch.bfloat16 and "DepthwiseConv2dFunction" not in type(out.grad_fn).__name__
        out.float().sum().backward()
        outs.append(out)
    assert torch.equal(outs[0], outs[1]) and torch.equal(fast.weight.grad, plain.weight.grad)
    model = models.load_backbone("efficientnet_lite0", pretrained=False, num_classes=3).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a whole training step of the swapped backbone
        loss = F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
