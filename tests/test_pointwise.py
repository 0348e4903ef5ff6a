import copy
import io

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from tl_helpers import models
from tl_helpers.pointwise import (
    MAX_POSITIONS,
    PointwiseConv2d,
    pointwise_conv2d,
    use_fast_pointwise,
    use_plain_pointwise,
)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_matrix_product_gives_conv2ds_output_gradients_and_memory_format(channels_last, bias):
    torch.manual_seed(0)
    for size in ((1, 1), (2, 2), (3, 5), (4, 4), (7, 7)):
        x = torch.randn(5, 12, *size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        weight = torch.randn(20, 12, 1, 1, requires_grad=True)
        b = torch.randn(20, requires_grad=True) if bias else None
        out, ref = pointwise_conv2d(x, weight, b), F.conv2d(x, weight, b)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5, msg=str(size))
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert out.is_contiguous(memory_format=layout), (size, out.stride())
        grad_out = torch.randn_like(ref)
        inputs = (x, weight) + ((b,) if bias else ())
        got = torch.autograd.grad(out, inputs, grad_out)
        want = torch.autograd.grad(ref, inputs, grad_out)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=str(size))


def test_matrix_product_rejects_a_kernel_that_is_not_1x1():
    with pytest.raises(ValueError, match="1, 1"):
        pointwise_conv2d(torch.randn(1, 4, 5, 5), torch.randn(8, 4, 3, 3))
    with pytest.raises(ValueError, match="F.conv2d"):
        pointwise_conv2d(torch.randn(1, 4, 5, 5), torch.randn(8, 3, 1, 1))


def _uses_matrix_product(out: torch.Tensor) -> bool:
    names = []
    node = out.grad_fn
    while node is not None and len(names) < 6:  # the last few autograd nodes of the output
        names.append(type(node).__name__)
        node = node.next_functions[0][0] if node.next_functions else None
    return any(n.startswith(("Addmm", "Mm")) for n in names) and not any("Convolution" in n for n in names)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace's deprecation notice
def test_module_takes_the_matrix_product_only_on_small_maps():
    torch.manual_seed(0)
    plain = nn.Conv2d(16, 24, 1)
    fast = copy.deepcopy(plain)
    assert use_fast_pointwise(fast) == 1 and type(fast) is PointwiseConv2d
    for size, product in ((1, True), (2, True), (4, True), (5, False), (16, False)):
        assert (size * size <= MAX_POSITIONS) is product
        x = torch.randn(3, 16, size, size, requires_grad=True)
        out_fast, out_plain = fast(x), plain(x)
        assert _uses_matrix_product(out_fast) is product, (size, out_fast.grad_fn)
        torch.testing.assert_close(out_fast, out_plain, rtol=1e-5, atol=1e-5)
        grad_out = torch.randn_like(out_plain)
        got = torch.autograd.grad(out_fast, (x, fast.weight, fast.bias), grad_out)
        want = torch.autograd.grad(out_plain, (x, plain.weight, plain.bias), grad_out)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    x = torch.randn(2, 16, 2, 2)
    with torch.inference_mode():  # inference takes it too
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    traced = torch.jit.trace(fast, x)  # tracing records a plain convolution
    assert "conv" in str(traced.graph) and "linear" not in str(traced.graph)
    torch.testing.assert_close(traced(x), plain(x), rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast casts the product as it casts the convolution
        assert fast(x).dtype == plain(x).dtype == torch.bfloat16


def test_only_plain_1x1_stride_1_convolutions_are_swapped():
    class Custom(nn.Conv2d):
        pass

    model = nn.Sequential(
        nn.Conv2d(8, 16, 1),  # pointwise: swapped
        nn.Conv2d(16, 16, 1, bias=False, padding="valid"),  # pointwise, "valid": swapped
        nn.Conv2d(16, 16, 1, stride=2),  # strided: kept
        nn.Conv2d(16, 16, 1, padding=1),  # padded: kept
        nn.Conv2d(16, 16, 1, groups=4),  # grouped: kept
        nn.Conv2d(16, 16, 3),  # 3x3: kept
        Custom(16, 16, 1),  # a subclass with its own forward may differ: kept
    )
    assert use_fast_pointwise(model) == 2
    assert [type(m) for m in model] == [PointwiseConv2d] * 2 + [nn.Conv2d] * 4 + [Custom]
    assert use_fast_pointwise(model) == 0  # twice changes nothing
    assert use_plain_pointwise(model) == 2 and [type(m) for m in model][:2] == [nn.Conv2d] * 2


def test_load_backbone_swaps_every_pointwise_convolution_and_nothing_else():
    model = models.load_backbone("efficientnet_lite0", pretrained=False)
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    swapped = [n for n, m in model.named_modules() if isinstance(m, PointwiseConv2d)]
    pointwise = [n for n, m in reference.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert swapped == pointwise and len(swapped) == 32
    assert list(model.state_dict()) == list(reference.state_dict())


def test_a_backbone_gives_the_same_outputs_and_gradients_and_repeats_itself():
    def run(fast: bool, dtype: torch.dtype, seed: int = 0):
        torch.manual_seed(seed)
        model = models.load_backbone("efficientnet_lite0", pretrained=False, num_classes=4).to(dtype)
        if not fast:
            assert use_plain_pointwise(model) == 32
        model = model.to(memory_format=torch.channels_last).train()
        x = torch.randn(6, 3, 32, 32, dtype=dtype).contiguous(memory_format=torch.channels_last)
        out = model(x)
        F.cross_entropy(out, torch.tensor([0, 1, 2, 3, 0, 1])).backward()
        return out.detach(), {n: p.grad for n, p in model.named_parameters()}

    # float64: the same function. (In float32 a randomly initialised network in training mode, BatchNorm over
    # six images, amplifies the different rounding into gradients that differ by up to 1e-5 of their size.)
    (out_fast, fast), (out_plain, plain) = run(True, torch.float64), run(False, torch.float64)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-10, atol=1e-12)
    for name in fast:
        torch.testing.assert_close(fast[name], plain[name], rtol=1e-9, atol=1e-11, msg=name)
    (out_fast, fast), (out_again, again) = run(True, torch.float32), run(True, torch.float32)
    assert torch.equal(out_fast, out_again)
    for name in fast:
        assert torch.equal(fast[name], again[name]), name  # same seed, same numbers


def test_swapped_model_survives_deepcopy_and_pickling():
    model = models.load_backbone("efficientnet_lite0", pretrained=False).eval()
    x = torch.randn(1, 3, 32, 32)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for other in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        assert type(other.conv_head) is PointwiseConv2d
        with torch.no_grad():
            assert torch.equal(other(x), model(x))
